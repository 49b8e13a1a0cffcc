"""KB_EMBEDDER=e5+use in the store: switching to it (or changing its weight) re-embeds through
`wxkf kb reindex`, and concurrent searches rank as searches one at a time do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.test_kb_store import scalar
from wxkf.agent.kb import FusedEmbedder, KnowledgeBase, USEEmbedder, store
from wxkf.agent.kb.embedders import E5Embedder
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
