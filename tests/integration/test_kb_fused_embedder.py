"""KB_EMBEDDER=e5+use in the store: switching to it (or changing its weight) re-embeds through
`wxkf kb reindex`, and concurrent searches rank as searches one at a time do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.test_kb_store import scalar
from wxkf.agent.kb import FusedEmbedder, KnowledgeBase, USEEmbedder, store
from wxkf.agent.kb.embedders import E5Embedder, mapped_similarity
from wxkf.db.engine import Database

FAQ = """# 青山健身
## 会员卡
### 会员卡可以转让吗？
会员卡可以转给他人一次，手续费 100 元，需双方到前台办理。
### 可以暂停会员卡吗？
出差或生病可以申请停卡，每年最多停 60 天。
## 课程
### 私教课怎么预约？
在小程序「私教预约」选择教练和时间，提前 2 小时可免费取消。
"""


async def test_switching_to_e5_use_or_its_weight_re_embeds_through_reindex(
    database: Database, tmp_path: Path, e5_embedder: E5Embedder
) -> None:
    path = tmp_path / "faq.md"
    path.write_text(FAQ, encoding="utf-8")
    await KnowledgeBase(database, e5_embedder).add_documents([path])
    fused = KnowledgeBase(database, FusedEmbedder(e5_embedder, USEEmbedder(), 0.8))
    assert (await fused.status()).stale
    with pytest.raises(store.KnowledgeBaseStale, match="wxkf kb reindex"):
        await fused.search("我的卡能给朋友用吗")
    assert await fused.reindex() == 3
    assert not (await fused.status()).stale
    assert await scalar(database, "SELECT DISTINCT vector_dims(embedding) FROM kb_chunks") == 896
    assert await scalar(database, "SELECT DISTINCT embedder_version FROM kb_chunks") == fused.embedder.version
    assert await scalar(database, "SELECT to_regclass('ix_kb_chunks_hnsw_896')") is not None
    [best, *_] = await fused.search("我的卡能给朋友用吗")
    assert best.heading.endswith("会员卡可以转让吗？")
    assert await fused.search("明天会下雨吗") == []

    reweighted = KnowledgeBase(database, FusedEmbedder(e5_embedder, USEEmbedder(), 0.7))
    assert (await reweighted.status()).stale
    assert await reweighted.reindex() == 3
    assert await scalar(database, "SELECT count(DISTINCT embedder_version) FROM kb_chunks") == 1


async def test_concurrent_searches_rank_as_searches_one_at_a_time(
    database: Database, tmp_path: Path, e5_embedder: E5Embedder
) -> None:
    path = tmp_path / "faq.md"
    path.write_text(FAQ, encoding="utf-8")
    kb = KnowledgeBase(database, FusedEmbedder(e5_embedder, USEEmbedder(), 0.8))
    await kb.add_documents([path])
    questions = ["我的卡能给朋友用吗", "要出国三个月卡能冻结吗", "想约个教练上课", "明天会下雨吗"]
    alone = [await kb.search(q, k=3) for q in questions]
    together = await asyncio.gather(*(kb.search(q, k=3) for q in questions))
    assert [[(p.chunk_id, p.score) for p in r] for r in together] == [
        [(p.chunk_id, p.score) for p in r] for r in alone
    ]
    assert [r[0].heading.rsplit(" > ", 1)[-1] for r in alone[:3]] == [
        "会员卡可以转让吗？",
        "可以暂停会员卡吗？",
        "私教课怎么预约？",
    ]
    assert alone[3] == []


async def test_each_models_similarity_is_read_on_its_own_scale(
    database: Database, tmp_path: Path, e5_embedder: E5Embedder
) -> None:
    """The semantic evidence of an e5+use passage is each model's cosine (read back from the one stored
    vector) mapped through that model's range, not the fused cosine through the fused range."""
    path = tmp_path / "faq.md"
    path.write_text(FAQ, encoding="utf-8")
    fused = FusedEmbedder(e5_embedder, USEEmbedder(), 0.7)
    kb = KnowledgeBase(database, fused)
    await kb.add_documents([path])
    question = "我的卡能给朋友用吗"
    passages, _ = await kb.search_detailed(question, k=3, halves=(True, False), threshold=False)
    vector = await fused.embed_query(question)
    async with database.pool.connection() as conn:
        stored = dict(await (await conn.execute("SELECT id, embedding::text FROM kb_chunks")).fetchall())
    for passage in passages:
        chunk = [float(v) for v in stored[passage.chunk_id].strip("[]").split(",")]
        e5_cos = sum(a * b for a, b in zip(vector[:384], chunk[:384], strict=True)) / 0.7
        use_cos = sum(a * b for a, b in zip(vector[384:], chunk[384:], strict=True)) / 0.3
        (e5_low, e5_high), (use_low, use_high) = E5Embedder.SIMILARITY_RANGE, USEEmbedder.SIMILARITY_RANGE
        expected = 0.7 * min(1.0, max(0.0, (e5_cos - e5_low) / (e5_high - e5_low))) + 0.3 * min(
            1.0, max(0.0, (use_cos - use_low) / (use_high - use_low))
        )
        assert passage.score == pytest.approx(expected, abs=2e-4), passage.heading
    assert {round(p.score, 2) for p in passages} != {
        round(mapped_similarity(p.similarity, fused.similarity_range), 2) for p in passages
    }
