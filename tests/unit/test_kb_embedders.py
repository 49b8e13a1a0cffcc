from __future__ import annotations

import math

from wxkf.agent.kb.embedders import CorpusStats, HashingEmbedder


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
