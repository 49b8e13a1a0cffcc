"""Every surface refuses bad input Chinese first with the English beside: a bad setting at start, a bad
REST API body, a bad import row, a bad console form, an unknown console address."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.integration.console_client import ConsoleClient, create_staff
from tests.integration.push_harness import PushRun, push_pipeline
from wxkf.cli import app as cli

KEY = "k-test-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
CJK = re.compile(r"[\u3400-\u9fff]")


def _chinese_first(line: str) -> None:
    """`place: 中文 / English`: the explanation after the place starts in Chinese."""
    explanation = line.split(": ", 1)[1]
    assert CJK.search(explanation.split(" / ", 1)[0]), line


@pytest.fixture
async def run(settings_factory: Any) -> AsyncIterator[PushRun]:
    async with push_pipeline(settings_factory, wxkf_api_key=KEY) as running:
        await create_staff(running.run.conninfo, "admin")
        yield running


def test_a_bad_setting_at_start_names_the_variable_and_the_allowed_values(tmp_path: Path) -> None:
    bad = {
        "KF_SESSION_POLICY": "sometimes",
        "KB_EMBEDDER": "bert",
        "LOG_LEVEL": "LOUD",
        "PUSH_DAILY_LIMIT": "many",
        "KF_DEBOUNCE_SECONDS": "soon",
    }
    result = CliRunner().invoke(
        cli, ["kb", "list"], env={"COLUMNS": "400", "WXKF_DATA_DIR": str(tmp_path), **bad}
    )
    assert result.exit_code == 2, result.output
    lines = {
        line.strip().removeprefix("- ").split(":", 1)[0]: line.strip() for line in result.output.splitlines()
    }
    assert (
        "KF_SESSION_POLICY: 只能是以下之一：'respect'、'end' / Input should be" in lines["KF_SESSION_POLICY"]
    )
    assert "'e5'、'use'、'e5+use'、'hashing'" in lines["KB_EMBEDDER"]
    assert "'DEBUG'、'INFO'、'WARNING'、'ERROR'" in lines["LOG_LEVEL"]
    assert lines["PUSH_DAILY_LIMIT"].startswith("- PUSH_DAILY_LIMIT: 须为整数 / ")
    assert lines["KF_DEBOUNCE_SECONDS"].startswith("- KF_DEBOUNCE_SECONDS: 须为数字 / ")
    for variable in bad:
        _chinese_first(lines[variable])
    assert "Traceback" not in result.output


async def test_a_bad_api_body_or_import_row_is_refused_chinese_first(run: PushRun) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=run.run.base_url, headers=auth) as http:
        missing = await http.post("/api/intents", json={"external_userid": run.sim.customers[0], "name": "x"})
        assert missing.status_code == 422, missing.text
        assert "open_kfid: 必填，请补上 / Field required" in missing.json()["problems"]
        broken = await http.post(
            "/api/intents", content=b'{"name": "x",', headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 422, broken.text
        [problem] = broken.json()["problems"]
        assert problem.startswith("请求体 / body: 不是有效的 JSON"), problem
        garbled = await http.post(
            "/api/intents", content=b'{"name": "\xff\xfe"}', headers={"Content-Type": "application/json"}
        )
        assert garbled.status_code == 422, garbled.text  # the documented shape, not FastAPI's 400
        [undecodable] = garbled.json()["problems"]
        assert undecodable.startswith("请求体 / body: 不是 UTF-8"), undecodable
        rows = "name,city,age\n张三,北京,35\n李四,上海,三十\n,广州,20\n"
        refused = await http.post(
            "/api/profiles/import", files={"file": ("people.csv", rows.encode(), "text/csv")}
        )
        assert refused.status_code == 422, refused.text
        problems = refused.json()["problems"]
        assert any(p.startswith("第 3 行 / line 3: age: 须为整数 / ") for p in problems), problems
        assert "第 4 行 / line 4: name: 必填，请补上 / Field required" in problems
        for line in [*missing.json()["problems"], problem, *problems]:
            _chinese_first(line)


async def test_a_bad_console_form_and_an_unknown_console_address_read_chinese_first(run: PushRun) -> None:
    async with ConsoleClient(run.run.base_url) as admin:
        await admin.login("admin")
        await admin.get("/console/push")
        owner = {"open_kfid": run.sim.open_kfid, "external_userid": run.sim.customers[0]}
        intent = await admin.post("/console/push/intents", {**owner, "name": "找人", "threshold": "2"})
        assert intent.status_code == 422, intent.text[:2000]
        assert "threshold: 须小于或等于 1 / Input should be less than or equal to 1" in html.unescape(
            intent.text
        )
        await admin.get("/console/push/templates")
        card = await admin.post(
            "/console/push/templates",
            {"name": "card", "kind": "miniprogram", "pagepath": "pages/m"},
            files={"cover": ("cover.png", PNG, "image/png")},
        )
        assert card.status_code == 422, card.text[:2000]
        assert "appid: 必填，请补上 / Field required" in html.unescape(card.text)

        unknown = await admin.get("/console/no-such-page")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("text/html")
        assert "没有这个页面，请检查地址 / no such page" in unknown.text
        assert 'href="/console/static/console.css"' in unknown.text  # the console's own style
        assert unknown.headers["X-Frame-Options"] == "DENY"  # and its security headers
        assert "Not Found" not in unknown.text
        wrong_method = await admin.http.put("/console/push")
        assert wrong_method.status_code == 405
        assert "这个地址不接受这种请求" in wrong_method.text
        assert "GET" in wrong_method.headers["allow"]
    async with httpx.AsyncClient(base_url=run.run.base_url) as http:
        anonymous = await http.get("/console/nothing/here")
        assert anonymous.status_code == 404
        assert "没有这个页面" in anonymous.text
        elsewhere = await http.get("/no-such-path")  # outside the console FastAPI's JSON stays
        assert elsewhere.status_code == 404
        assert elsewhere.json() == {"detail": "Not Found"}
