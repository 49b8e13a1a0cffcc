"""An empty or stale knowledge base and a failing LLM are said out loud: start-up, /ready and doctor."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.kf_harness import ScriptedResponder, running_pipeline
from wxkf.agent.kb import HashingEmbedder, KnowledgeBase
from wxkf.db.engine import Database
from wxkf.ops.doctor import Check, check_database, check_knowledge_base, run_doctor
from wxkf.service import check_knowledge_base as check_at_start

FAQ = "# 小店\n## 发票\n电子发票在确认收货后申请。\n## 门店\n杭州门店每天十点营业。\n"


async def add_faq(database: Database, tmp_path: Path) -> None:
    path = tmp_path / "faq.md"
    path.write_text(FAQ, encoding="utf-8")
    await KnowledgeBase(database, HashingEmbedder()).add_documents([path])


async def test_ready_shows_the_knowledge_base_and_recent_llm_failures(
    settings_factory: Any, database: Database, tmp_path: Path
) -> None:
    overrides: dict[str, Any] = {
        "kb_embedder": "hashing",
        "llm_api_key": "sk-wrong",
        "llm_base_url": "http://127.0.0.1:1",
    }
    async with (
        running_pipeline(settings_factory, ScriptedResponder(), **overrides) as run,
        httpx.AsyncClient(base_url=run.base_url) as http,
    ):
        components = (await http.get("/ready")).json()["components"]
        assert components["knowledge_base"]["state"] == "degraded"
        assert "wxkf kb add" in components["knowledge_base"]["fix"]
        assert components["llm"] == {"state": "ok", "model": "deepseek-chat"}

        await add_faq(database, tmp_path)
        async with database.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO agent_llm_failures (kind, status_code, model, detail) "
                "VALUES ('auth', 401, 'deepseek-chat', 'key refused')"
            )
        ready = await http.get("/ready")
        components = ready.json()["components"]
        assert components["knowledge_base"] == {
            "state": "ok",
            "documents": 1,
            "chunks": 2,
            "embedder": "hashing",
        }
        assert (components["llm"]["state"], components["llm"]["kind"]) == ("degraded", "auth")
        assert "offline knowledge-base answer" in components["llm"]["error"]
        assert "sk-wrong" not in ready.text


async def test_doctor_fails_an_empty_or_stale_knowledge_base_with_the_command_that_fixes_it(
    settings_factory: Any, database: Database, tmp_path: Path
) -> None:
    checks: list[Check] = [check_database, check_knowledge_base]
    [empty] = (await run_doctor(settings_factory(), checks=checks)).by_check("knowledge_base")
    assert (empty.icon, empty.status) == ("❌", "fail")
    assert "wxkf kb add" in empty.fix

    await add_faq(database, tmp_path)
    [stale] = (await run_doctor(settings_factory(), checks=checks)).by_check("knowledge_base")
    assert stale.status == "fail"
    assert "wxkf kb reindex" in stale.fix
    [fine] = (await run_doctor(settings_factory(kb_embedder="hashing"), checks=checks)).by_check(
        "knowledge_base"
    )
    assert fine.status == "ok"
    assert "2 chunks" in fine.detail


async def test_start_up_warns_of_an_empty_knowledge_base_and_re_embeds_a_stale_one(
    database: Database, tmp_path: Path, e5_embedder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    knowledge = KnowledgeBase(database, e5_embedder)
    with caplog.at_level(logging.WARNING, logger="wxkf.service"):
        assert await check_at_start(knowledge) is None
    assert "wxkf kb add" in caplog.text

    await add_faq(database, tmp_path)  # embedded by the hashing embedder: stale for e5
    task = await check_at_start(knowledge)
    assert task is not None
    await task
    status = await knowledge.status()
    assert not status.stale
    assert (await knowledge.search("电子票据怎么开"))[0].heading == "小店 > 发票"
