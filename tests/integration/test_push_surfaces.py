"""Push's surfaces: the REST API under /api/, `wxkf push …`, and the agent's intent tools."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from tests.integration.push_harness import customer_wrote, push_pipeline
from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.agent.responder import build_responder
from wxkf.agent.tools import ToolAudit, ToolRegistry
from wxkf.cli import app as cli
from wxkf.kf.responder import Conversation, InboundMessage, ReplyRequest
from wxkf.kf.runtime import Pipeline
from wxkf.push.service import PushService
from wxkf.push.tools import customer_tools
from wxkf.web.app import create_app

KEY = "k-test-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)


async def test_the_api_needs_its_key_and_refuses_bad_input_in_chinese_first(settings_factory: Any) -> None:
    async with push_pipeline(settings_factory, wxkf_api_key=KEY) as run:
        owner = {"open_kfid": run.sim.open_kfid, "external_userid": run.sim.customers[0]}
        await run.run.say(owner["external_userid"], "你好")  # intents are for customers who wrote
        await run.run.idle()
        async with httpx.AsyncClient(base_url=run.run.base_url) as http:
            assert (await http.get("/api/intents")).status_code == 401
            wrong = await http.get("/api/intents", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert KEY not in wrong.text
            auth = {"Authorization": f"Bearer {KEY}"}
            created = await http.post(
                "/api/intents",
                headers=auth,
                json={
                    **owner,
                    "name": "找投资人",
                    "conditions": {"required": [{"field": "city", "op": "eq", "value": "北京"}]},
                },
            )
            assert created.status_code == 201
            assert created.json()["threshold"] == 0.6  # PUSH_DEFAULT_THRESHOLD
            bad = await http.post(
                "/api/intents",
                headers=auth,
                json={
                    **owner,
                    "name": "x",
                    "conditions": {"required": [{"field": "city", "op": "gt", "value": 3}]},
                },
            )
            assert bad.status_code == 422
            assert any("需要数字" in p for p in bad.json()["problems"])
            template = await http.put(
                "/api/templates/short", headers=auth, json={"kind": "text", "content": "{score_pct}"}
            )
            assert template.status_code == 422
            assert "「{score_pct}」不是可用的占位符" in template.text
            card = await http.put(
                "/api/templates/card",
                headers=auth,
                json={
                    "kind": "miniprogram",
                    "appid": "wx8bd80126147dfAAA",
                    "pagepath": "pages/m?no={match_id}",
                    "thumb_base64": base64.b64encode(PNG).decode(),
                },
            )
            assert card.status_code == 200
            assert len(card.json()["template"]["thumb"]) == 64
            csv = "name,city,age\n张三,北京,35\n李四,上海,三十\n,广州,20\n"
            refused = await http.post(
                "/api/profiles/import", headers=auth, files={"file": ("people.csv", csv.encode(), "text/csv")}
            )
            assert refused.status_code == 422
            assert [p.split(":")[0] for p in refused.json()["problems"]] == [
                "第 3 行 / line 3",
                "第 4 行 / line 4",
            ]
            assert (await http.get("/api/profiles", headers=auth)).json() == []
            prefs = await http.patch(
                f"/api/customers/{owner['open_kfid']}/{owner['external_userid']}/preferences",
                headers=auth,
                json={"quiet_hours": "23:00-07:00"},
            )
            assert prefs.json()["quiet_hours"] == "23:00-07:00"
            openapi = (await http.get("/openapi.json")).json()
            assert {"/api/intents", "/api/profiles/import", "/api/history"} <= set(openapi["paths"])


async def test_without_an_api_key_configured_the_api_says_how_to_enable_it(settings_factory: Any) -> None:
    app = create_app(settings_factory())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.get("/api/intents", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 401
    assert "WXKF_API_KEY" in response.json()["detail"]


def test_the_cli_imports_all_rows_or_refuses_the_file_listing_bad_lines(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("WXKF_DATA_DIR", str(tmp_path / "var"))
    bad = tmp_path / "people.csv"
    bad.write_text(
        "姓名,城市,年龄,标签\n张三,北京,35,AI;创业\n李四,上海,abc,\n王五,北京,200,\n", encoding="utf-8"
    )
    refused = CliRunner().invoke(cli, ["push", "profiles", "import", str(bad)])
    assert refused.exit_code == 2  # a refusal, as every push command words one
    assert "第 3 行 / line 3: age" in refused.output
    assert "第 4 行 / line 4: age" in refused.output
    assert _count(database_url, "push_profiles") == 0  # no partial import
    good = tmp_path / "people.jsonl"
    good.write_text(
        '{"name": "张三", "city": "北京", "tags": ["AI"], "external_ref": "p1"}\n\n'
        '{"name": "李四", "city": "上海", "融资": 100, "external_ref": "p2"}\n',
        encoding="utf-8",
    )
    imported = CliRunner().invoke(cli, ["push", "profiles", "import", str(good)])
    assert imported.exit_code == 0, imported.output
    assert "已导入 2 行" in imported.output
    again = CliRunner().invoke(cli, ["push", "profiles", "import", str(good)])
    assert "0 份资料新增或更新" in again.output  # the same rows again change nothing
    assert _count(database_url, "push_profiles") == 2
    asyncio.run(_wrote(database_url, "wkCLI", "wmCLI"))
    intent = CliRunner().invoke(
        cli,
        [
            "push",
            "intents",
            "add",
            "wkCLI",
            "wmCLI",
            "--name",
            "找人",
            "--require",
            "city=北京",
            "--keyword",
            "AI",
        ],
    )
    assert intent.exit_code == 0, intent.output
    listed = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["push", "intents", "list"])
    assert "times in Asia/Shanghai" in listed.output  # stored in UTC, shown in CONTACT_TIMEZONE
    matched = CliRunner().invoke(cli, ["push", "match", "1"])
    assert matched.exit_code == 0, matched.output
    assert "新匹配 1" in matched.output
    assert "张三" in matched.output
    template = CliRunner().invoke(cli, ["push", "templates", "set", "short", "--text", "匹配度 {score_pct}%"])
    assert template.exit_code == 2
    assert "「{score_pct}」不是可用的占位符" in template.output
    empty = CliRunner().invoke(cli, ["push", "templates", "set", "blank", "--text", ""])
    assert empty.exit_code == 2, empty.output  # not "saved" with the default text in its place
    assert "content" in empty.output
    assert "已保存" not in empty.output
    wrong = CliRunner().invoke(
        cli, ["push", "intents", "add", "wkCLI", "wmCLI", "--name", "x", "--require", "age>老"]
    )
    assert wrong.exit_code != 0
    assert "Traceback" not in wrong.output


async def _wrote(database_url: str, open_kfid: str, external_userid: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await customer_wrote(conn, open_kfid, external_userid)


def _count(database_url: str, table: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
async def tooled(
    settings_factory: Any, database_url: str, database: Any
) -> AsyncIterator[tuple[Any, FakeOpenAI, PushService]]:
    with FakeOpenAI() as fake:
        settings = settings_factory(llm_api_key="sk-test", llm_base_url=fake.base_url, llm_max_retries=0)
        async with Pipeline(settings, database) as pipeline:
            push = PushService(settings, pipeline)
            async with push.pool.connection() as conn:
                await customer_wrote(conn, "wkTOOL", "wmTOOL")  # the customer _asking speaks for
            registry = ToolRegistry(ToolAudit(database))
            registry.extend(customer_tools(push))
            responder = build_responder(settings, database, retriever=None, tools=registry)
            yield responder, fake, push
            await responder.aclose()
            await push.aclose()


def _asking(text: str) -> ReplyRequest:
    message = InboundMessage(
        msgid=f"m{hash(text)}",
        msgtype="text",
        content={"content": text},
        text=text,
        send_time=datetime.now(UTC),
    )
    return ReplyRequest(conversation=Conversation("wkTOOL", "wmTOOL"), messages=[message], remaining_budget=5)


async def test_create_intent_is_confirmed_by_the_customer_before_it_is_active(
    tooled: tuple[Any, FakeOpenAI, PushService],
) -> None:
    responder, fake, push = tooled
    fake.tool_call(
        "create_intent",
        {
            "name": "寻找AI合作伙伴",
            "required": [{"field": "city", "op": "eq", "value": "北京"}],
            "keywords": ["AI"],
        },
    )
    fake.tool_call("create_intent", {"draft_id": 1})  # the model tries to confirm at once: refused
    fake.reply("我为您整理了：寻找AI合作伙伴，城市 = 北京。确认创建吗？")
    first = await responder.respond(_asking("帮我找北京做AI的合作伙伴"))
    assert "确认创建吗" in first.text
    refused = fake.chat_requests()[2].messages[-1]["content"]
    assert "客户还没有看到预览" in refused
    [draft] = await push.list_intents(status="draft")
    assert draft.conditions.required[0].describe() == "城市 = 北京"
    fake.tool_call("create_intent", {"draft_id": draft.id})
    fake.reply("好的，已为您创建。")
    await responder.respond(_asking("好的"))
    assert (await push.get_intent(draft.id)).status == "active"
    fake.tool_call("list_my_intents", {})
    fake.reply("您有 1 个意图")
    await responder.respond(_asking("我有哪些需求"))
    listed = fake.chat_requests()[-1].messages[-1]["content"]
    assert "寻找AI合作伙伴" in listed
    fake.tool_call("cancel_intent", {"intent_id": draft.id})
    fake.reply("已取消")
    await responder.respond(_asking("不用找了"))
    assert (await push.get_intent(draft.id)).status == "cancelled"


async def test_a_profile_is_read_from_free_text_and_an_unreadable_answer_is_refused() -> None:
    from pydantic import SecretStr

    from wxkf.agent.llm import LLMClient
    from wxkf.push.errors import ExtractionError
    from wxkf.push.extraction import extract_profile

    with FakeOpenAI() as fake:
        llm = LLMClient(base_url=fake.base_url, api_key=SecretStr("sk-test"), model="m", max_retries=0)
        fake.reply(
            '```json\n{"name": "张三", "city": "北京", "age": 35, "tags": ["AI"], "gender": null}\n```'
        )
        profile = await extract_profile(llm, "[聊天记录] 张三：我在北京做AI，今年35")
        fake.reply("张三，北京人，做 AI 的")  # not JSON
        with pytest.raises(ExtractionError, match="不是 JSON"):
            await extract_profile(llm, "张三的介绍")
        fake.reply('{"city": "北京"}')  # no name
        with pytest.raises(ExtractionError, match="name"):
            await extract_profile(llm, "某人的介绍")
        await llm.aclose()
    assert (profile.name, profile.city, profile.age, profile.tags) == ("张三", "北京", 35, ["AI"])


async def test_a_nul_character_anywhere_in_the_api_is_refused_by_name_and_changes_nothing(
    settings_factory: Any,
) -> None:
    """PostgreSQL text cannot hold U+0000: the API refuses it as input (422, the field named), not as a 500."""
    async with push_pipeline(settings_factory, wxkf_api_key=KEY) as run:
        owner = {"open_kfid": run.sim.open_kfid, "external_userid": run.sim.customers[0]}
        auth = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=run.run.base_url, headers=auth) as http:
            attempts = [
                http.post("/api/intents", json={**owner, "name": "找\x00投资人"}),
                http.post(
                    "/api/intents",
                    json={
                        **owner,
                        "name": "找投资人",
                        "conditions": {"required": [{"field": "city", "op": "eq", "value": "北\x00京"}]},
                    },
                ),
                http.post("/api/profiles", json={"name": "张三", "city": "北京", "tags": ["创\x00业"]}),
                http.patch(
                    f"/api/customers/{owner['open_kfid']}/{owner['external_userid']}/preferences",
                    json={"timezone": "Asia/Shang\x00hai"},
                ),
                http.put("/api/templates/short", json={"kind": "text", "content": "【{name}】\x00"}),
                http.post("/api/profiles/extract", json={"text": "张三\x00，北京"}),
            ]
            for attempt in attempts:
                refused = await attempt
                assert refused.status_code == 422, refused.text
                assert any("NUL" in p for p in refused.json()["problems"]), refused.text
            assert (await http.get("/api/intents")).json() == []
            assert (await http.get("/api/profiles")).json() == []
            assert "short" not in {t["name"] for t in (await http.get("/api/templates")).json()}
            assert (await http.get("/api/templates/a%00b")).status_code in (404, 422)


def test_every_push_command_refuses_bad_input_with_a_message_and_exit_2_never_a_traceback(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("WXKF_DATA_DIR", str(tmp_path / "var"))
    runs = {
        "nothing": ["push", "prefs", "set", "wkCLI", "wmCLI"],
        "unknown": ["push", "prefs", "set", "NOTAKF", "wmCLI", "--daily-limit", "3"],
        "missing": ["push", "intents", "show", "999"],
        "no profile": ["push", "profiles", "remove", "999"],
        "no template": ["push", "templates", "remove", "nope"],
    }
    for what, args in runs.items():
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (what, result.output, result.exception)
        assert isinstance(result.exception, SystemExit), (what, result.exception)
        assert result.output.startswith("❌ "), (what, result.output)
    nothing = CliRunner().invoke(cli, runs["nothing"])
    assert "没有要修改的设置 / nothing to change" in nothing.output
    assert "NOTAKF 不是本部署的客服账号" in CliRunner().invoke(cli, runs["unknown"]).output
    for args, allowed in (
        (["push", "prefs", "set", "wkCLI", "wmCLI", "--mode", "foo"], ["instant", "digest"]),
        (["push", "intents", "list", "--status", "weird"], ["draft", "active", "paused", "cancelled"]),
        (["push", "history", "--status", "weird"], ["scheduled", "sent", "dropped", "skipped"]),
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert all(value in result.output for value in allowed), result.output


async def _answer_to_a_partial_upload(base_url: str, head: dict[str, str], body: bytes) -> tuple[int, str]:
    """Send `head` and `body`, then keep the connection open without sending the rest: a server that
    waits for the whole upload before checking its size never answers (the wait_for times out)."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = [
            "POST /api/profiles/import HTTP/1.1",
            f"Host: {host}",
            *(f"{k}: {v}" for k, v in head.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(64 << 10), timeout=10)
    finally:
        writer.close()
    status_line, _, rest = answer.decode("utf-8", "replace").partition("\r\n")
    return int(status_line.split()[1]), rest


async def test_an_api_upload_over_the_import_limit_is_refused_before_it_is_read_whole(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wxkf.push.importing

    monkeypatch.setattr(wxkf.push.importing, "MAX_IMPORT_BYTES", 1 << 20)  # 1 MB, to keep the test light
    boundary = "b0undary"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\nname,city\n"
    ).encode()
    head = {"Authorization": f"Bearer {KEY}", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with push_pipeline(settings_factory, wxkf_api_key=KEY) as run:
        declared, text = await _answer_to_a_partial_upload(
            run.run.base_url, {**head, "Content-Length": str(25 << 20)}, part
        )
        assert declared == 422, text
        assert "文件超过 1 MB / the file is over 1 MB" in text
        rows = b"\xe5\xbc\xa0\xe4\xb8\x89,\xe5\x8c\x97\xe4\xba\xac\n" * ((2 << 20) // 13)
        chunked = part + rows
        body = b"".join(
            f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            for chunk in (chunked[i : i + (64 << 10)] for i in range(0, len(chunked), 64 << 10))
        )
        streamed, text = await _answer_to_a_partial_upload(
            run.run.base_url, {**head, "Transfer-Encoding": "chunked"}, body
        )
        assert streamed == 422, text
        assert "文件超过 1 MB / the file is over 1 MB" in text
        async with httpx.AsyncClient(
            base_url=run.run.base_url, headers={"Authorization": head["Authorization"]}
        ) as http:
            assert (await http.get("/api/profiles")).json() == []
            small = await http.post(
                "/api/profiles/import",
                files={"file": ("people.csv", "name,city\n张三,北京\n".encode(), "text/csv")},
            )
            assert small.json() == {"rows": 1, "written": 1}
            nothing = await http.post("/api/profiles/import", data={"other": "x"})
            assert nothing.status_code == 422
            assert any(p.startswith("file:") for p in nothing.json()["problems"]), nothing.text


async def test_intents_and_preferences_are_refused_for_a_customer_the_kf_account_never_heard_from(
    settings_factory: Any,
) -> None:
    async with push_pipeline(settings_factory, wxkf_api_key=KEY) as run:
        writer, silent = run.sim.customers[0], run.sim.customers[1]
        await run.run.say(writer, "你好")
        await run.run.idle()
        auth = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=run.run.base_url, headers=auth) as http:
            ghost = await http.post(
                "/api/intents", json={"open_kfid": "nope", "external_userid": "nobody", "name": "ghost"}
            )
            assert ghost.status_code == 422, ghost.text
            assert ghost.json()["problems"][0].startswith("open_kfid: nope 不是本部署的客服账号")
            never = await http.post(
                "/api/intents", json={"open_kfid": run.sim.open_kfid, "external_userid": silent, "name": "x"}
            )
            assert never.status_code == 422, never.text
            assert never.json()["problems"][0].startswith(f"external_userid: 客户 {silent} 从未给")
            prefs = await http.patch(f"/api/customers/nope/{writer}/preferences", json={"daily_limit": 3})
            assert prefs.status_code == 422, prefs.text
            assert "不是本部署的客服账号" in prefs.json()["problems"][0]
            assert (await http.get("/api/intents")).json() == []
            created = await http.post(
                "/api/intents",
                json={"open_kfid": run.sim.open_kfid, "external_userid": writer, "name": "找人"},
            )
            assert created.status_code == 201, created.text
            changed = await http.patch(
                f"/api/customers/{run.sim.open_kfid}/{writer}/preferences", json={"daily_limit": 3}
            )
            assert changed.json()["daily_limit"] == 3
