"""The semantic part tells a strong fit from a poor one with every offline embedder.

The knowledge base's `similarity_range` is calibrated for a question against FAQ passages; an
intent and a profile share more words (a city, "AI"), so on that scale every e5 pair clipped to 1.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from wxkf.agent.kb.embedders import E5Embedder, Embedder, FusedEmbedder, HashingEmbedder, USEEmbedder
from wxkf.demo import PROFILES
from wxkf.push.models import ProfileIn
from wxkf.push.scoring import match_similarity_range, semantic_part
from wxkf.push.store import embedding_text
from wxkf.push.vectors import intent_text

INTENT = intent_text(  # the demo's intent (and push_harness's)
    "寻找AI合作伙伴",
    "想找北京做 AI 的创业伙伴",
    {"required": [{"field": "city", "op": "eq", "value": "北京"}], "keywords": ["AI", "创业"]},
)
CTO = ProfileIn(**PROFILES[0])  # the demo's Beijing AI founder, a CTO looking for partners
ENGINEER = ProfileIn(name="李四", city="上海", age=28, tags=["AI"], position="工程师", description="做机器人")
CHEF = ProfileIn(name="周九", city="北京", position="厨师", description="川菜馆主厨")


def _cosine(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        math.fsum(x * x for x in a) * math.fsum(y * y for y in b)
    )


async def _semantic(embedder: Embedder) -> list[float]:
    intent, *profiles = await embedder.embed([INTENT, *(embedding_text(p) for p in (CTO, ENGINEER, CHEF))])
    return [semantic_part(_cosine(intent, p), match_similarity_range(embedder)) for p in profiles]


async def test_with_e5_a_strong_fit_a_partial_one_and_an_unrelated_one_score_apart(
    e5_embedder: E5Embedder,
) -> None:
    cto, engineer, chef = await _semantic(e5_embedder)
    assert cto < 1.0  # not clipped: a closer profile could still score higher
    assert cto - engineer >= 0.1
    assert engineer - chef >= 0.3
    assert chef <= 0.3  # unrelated: no "内容相近" in the explanation


async def test_with_the_hashing_embedder_the_fits_are_told_apart_too() -> None:
    cto, engineer, chef = await _semantic(HashingEmbedder())
    assert cto < 1.0
    assert cto - max(engineer, chef) >= 0.5  # lexical: the chef's 北京 counts as much as the engineer's AI


def test_a_fused_embedder_weighs_its_parts_ranges(e5_embedder: E5Embedder) -> None:
    use: Any = USEEmbedder()  # its model is not loaded: the range is a class attribute
    fused = FusedEmbedder(e5_embedder, use, 0.8)
    (low_a, high_a), (low_b, high_b) = match_similarity_range(e5_embedder), match_similarity_range(use)
    assert match_similarity_range(fused) == pytest.approx(
        (0.8 * low_a + 0.2 * low_b, 0.8 * high_a + 0.2 * high_b)
    )
