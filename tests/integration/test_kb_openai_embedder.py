"""The OpenAI-compatible embedder, through the real `openai` SDK, against the local fake server."""

from __future__ import annotations

from pathlib import Path

import pytest

from wxkf.agent.fake_openai import EMBEDDING_DIMENSIONS, FakeOpenAI
from wxkf.agent.kb import EmbeddingError, HashingEmbedder, KnowledgeBase, OpenAIEmbedder, make_embedder
from wxkf.agent.kb.embedders import FUSED_E5_WEIGHT, E5Embedder, FusedEmbedder, USEEmbedder
from wxkf.agent.kb.store import KnowledgeBaseStale
from wxkf.config import Settings
from wxkf.db.engine import Database

FAQ = "# 店\n## 发票\n电子发票在确认收货后申请。\n## 门店\n杭州门店每天十点营业。\n"


async def test_embeds_in_batches_in_input_order() -> None:
    with FakeOpenAI(api_key="sk-emb") as fake:
        embedder = OpenAIEmbedder(base_url=fake.base_url, api_key="sk-emb", model="bge-m3", batch_size=2)
        vectors = await embedder.embed(["电子发票", "门店营业时间", "电子发票"])
        await embedder.aclose()
        posts = [r for r in fake.requests if r.path.endswith("/embeddings")]
    assert len(vectors) == 3
    assert embedder.dim == EMBEDDING_DIMENSIONS
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]
    assert [r.body["input"] for r in posts] == [["电子发票", "门店营业时间"], ["电子发票"]]
    assert all(r.body["model"] == "bge-m3" for r in posts)
    assert embedder.version.startswith("openai:127.0.0.1:")


async def test_a_rejected_key_names_the_setting_and_hides_the_key() -> None:
    with FakeOpenAI(api_key="sk-right") as fake:
        embedder = OpenAIEmbedder(base_url=fake.base_url, api_key="sk-wrong-secret", model="m", max_retries=0)
        with pytest.raises(EmbeddingError) as info:
            await embedder.embed(["发票"])
        await embedder.aclose()
    assert "EMBEDDING_API_KEY" in str(info.value)
    assert "sk-wrong-secret" not in str(info.value)


def test_settings_choose_the_embedder() -> None:
    default = make_embedder(Settings(_env_file=None))
    assert isinstance(default, FusedEmbedder)
    assert (type(default.first), type(default.second)) == (E5Embedder, USEEmbedder)
    assert isinstance(make_embedder(Settings(_env_file=None, kb_embedder="e5")), E5Embedder)
    assert isinstance(make_embedder(Settings(_env_file=None, kb_embedder="use")), USEEmbedder)
    assert isinstance(make_embedder(Settings(_env_file=None, kb_embedder="hashing")), HashingEmbedder)
    fused = make_embedder(Settings(_env_file=None, kb_embedder="e5+use", kb_embedder_threads=2))
    assert isinstance(fused, FusedEmbedder)
    assert (type(fused.first), type(fused.second), fused.weight) == (E5Embedder, USEEmbedder, FUSED_E5_WEIGHT)
    assert fused.first._threads == fused.second._threads == 2  # type: ignore[attr-defined]
    configured = make_embedder(
        Settings(
            _env_file=None,
            embedding_base_url="http://127.0.0.1:1/v1",
            embedding_model="m",
            embedding_api_key="k",
        )
    )
    assert isinstance(configured, OpenAIEmbedder)
    assert configured.version == "openai:127.0.0.1:1:m:dnative"


async def test_switching_to_the_endpoint_re_embeds_and_searches(database: Database, tmp_path: Path) -> None:
    path = tmp_path / "faq.md"
    path.write_text(FAQ, encoding="utf-8")
    await KnowledgeBase(database, HashingEmbedder()).add_documents([path])
    with FakeOpenAI(api_key="sk-emb") as fake:
        embedder = OpenAIEmbedder(base_url=fake.base_url, api_key="sk-emb", model="bge-m3")
        kb = KnowledgeBase(database, embedder, min_relevance=0.0)
        with pytest.raises(KnowledgeBaseStale, match="wxkf kb reindex"):
            await kb.search(
                "电子发票怎么申请", k=2
            )  # hashing vectors are never searched with another model's
        assert await kb.reindex() == 2
        passages = await kb.search("电子发票怎么申请", k=2)
        await kb.aclose()
    assert passages
    assert passages[0].heading == "店 > 发票"
    async with database.pool.connection() as conn:
        cur = await conn.execute("SELECT DISTINCT vector_dims(embedding) FROM kb_chunks")
        dims = [dim for (dim,) in await cur.fetchall()]
    assert dims == [EMBEDDING_DIMENSIONS]
