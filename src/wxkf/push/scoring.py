"""How well a profile meets an intent: gates, then a weighted score with its parts and a Chinese explanation.

    required   all must hold, or there is no match (a gate)
    excluded   none may hold, or there is no match (a gate)
    preferred  share of them that hold                       ┐
    keywords   share of them the profile mentions            ├ weighted mean of the parts that apply
    semantic   intent ↔ profile cosine on push's scale       ┘ (PUSH_WEIGHT_*), in [0, 1]
               (`match_similarity_range`: unrelated 0, a strong fit 1)

A part applies when the intent has something for it (preferred conditions, keywords) or, for the
semantic part, when both sides have vectors from the same embedder. An intent with required
conditions only scores 1 on every profile that passes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wxkf.agent.kb.embedders import (
    E5Embedder,
    Embedder,
    FusedEmbedder,
    HashingEmbedder,
    USEEmbedder,
    fused_range,
    mapped_similarity,
)
from wxkf.push.conditions import Conditions, Profile, holds, mentions

# Intent ↔ profile cosines that mean (unrelated, a strong fit), per embedder: measured on the demo's
# and the tests' intents and profiles (docs/push.md, "The semantic part"). The knowledge base's
# `similarity_range` is a question ↔ FAQ passage scale; an intent and a profile share more (a city,
# "AI", the same kind of words), so on it every e5 pair sat above the top and scored 1.
MATCH_SIMILARITY_RANGES: tuple[tuple[type, tuple[float, float]], ...] = (
    (E5Embedder, (0.88, 0.95)),  # unrelated pairs 0.87–0.89, the best fits 0.936–0.940
    (USEEmbedder, (0.10, 0.75)),  # unrelated 0.01–0.19, the best fits 0.57–0.76
    (HashingEmbedder, (0.0, 0.6)),  # unrelated 0.0–0.06, the best fits 0.52–0.59
)


def match_similarity_range(embedder: Embedder) -> tuple[float, float]:
    """The semantic part's 0 and 1 for `embedder`; a model push has not measured (an OpenAI-compatible
    one) keeps its knowledge-base range."""
    if isinstance(embedder, FusedEmbedder):
        return fused_range(
            match_similarity_range(embedder.first), match_similarity_range(embedder.second), embedder.weight
        )
    for kind, similarity_range in MATCH_SIMILARITY_RANGES:
        if isinstance(embedder, kind):
            return similarity_range
    return embedder.similarity_range


@dataclass(frozen=True)
class Weights:
    preferred: float = 0.35
    keywords: float = 0.35
    semantic: float = 0.3


@dataclass(frozen=True)
class Scored:
    score: float
    parts: dict[str, float]  # preferred / keywords / semantic: each in [0, 1], only those that apply
    matched: list[dict[str, str]] = field(
        default_factory=list
    )  # {"kind": required|preferred|keyword, "text"}
    note: str = ""  # added to the explanation: the LLM's reason

    @property
    def explanation(self) -> str:
        """Written when read: most candidates are scored and dropped, few are recorded."""
        return explain(self.matched, self.parts) + (f"；{self.note}" if self.note else "")


def semantic_part(similarity: float, similarity_range: tuple[float, float]) -> float:
    """Cosine similarity on push's scale (`match_similarity_range`: unrelated → 0, a strong fit → 1)."""
    return min(1.0, mapped_similarity(similarity, similarity_range))


def score(
    conditions: Conditions,
    profile: Profile,
    *,
    similarity: float | None,
    similarity_range: tuple[float, float],
    weights: Weights,
) -> Scored | None:
    """The profile's score for the intent's conditions, or None when a gate rules it out."""
    matched: list[dict[str, str]] = []
    for condition in conditions.required:
        if not holds(condition, profile):
            return None
        matched.append({"kind": "required", "text": condition.describe()})
    if any(holds(condition, profile) for condition in conditions.excluded):
        return None
    parts: dict[str, float] = {}
    if conditions.preferred:
        met = [c for c in conditions.preferred if holds(c, profile)]
        parts["preferred"] = len(met) / len(conditions.preferred)
        matched += [{"kind": "preferred", "text": c.describe()} for c in met]
    if conditions.keywords:
        found = [k for k in conditions.keywords if mentions(profile.text, k)]
        parts["keywords"] = len(found) / len(conditions.keywords)
        matched += [{"kind": "keyword", "text": k} for k in found]
    if similarity is not None:
        parts["semantic"] = round(semantic_part(similarity, similarity_range), 4)
    weight_of = {"preferred": weights.preferred, "keywords": weights.keywords, "semantic": weights.semantic}
    total = sum(weight_of[name] for name in parts)
    value = sum(weight_of[name] * part for name, part in parts.items()) / total if total > 0 else 1.0
    return Scored(round(value, 4), parts, matched)


def explain(matched: list[dict[str, str]], parts: dict[str, float]) -> str:
    """符合「城市 = 北京」，偏好「标签包含「创业」」，关键词「AI」「创业」，内容相近（73%）."""
    pieces: list[str] = []
    required = [m["text"] for m in matched if m["kind"] == "required"]
    preferred = [m["text"] for m in matched if m["kind"] == "preferred"]
    keywords = [m["text"] for m in matched if m["kind"] == "keyword"]
    if required:
        pieces.append("符合" + "".join(f"「{t}」" for t in required))
    if preferred:
        pieces.append("满足偏好" + "".join(f"「{t}」" for t in preferred))
    if keywords:
        pieces.append("关键词" + "".join(f"「{t}」" for t in keywords))
    semantic = parts.get("semantic")
    if semantic is not None and semantic >= 0.3:
        pieces.append(f"内容相近（{semantic:.0%}）")
    return "，".join(pieces) or "与您的需求相关"
