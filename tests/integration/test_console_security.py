"""The console's security: no session, no page; no token or another site, no change; agents, no admin pages;
customer text shown as text."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from typer.testing import CliRunner

from tests.integration.console_client import PASSWORD, ConsoleClient, create_staff
from tests.integration.kf_harness import RunningPipeline, ScriptedResponder, running_pipeline
from wxkf.cli import app as cli
from wxkf.web.console.auth import MAX_FAILED_LOGINS
from wxkf.web.console.routes import router

PATH_VALUES = {
    "open_kfid": "wkNOSUCH",
    "external_userid": "wmNOSUCH",
    "group_id": "1",
    "user_id": "1",
    "action": "disable",
    "intent_id": "1",
}
PUBLIC = {"/console/login"}
ADMIN_PAGES = [
    "/console/kb",
    "/console/unanswered",
    "/console/overview",
    "/console/doctor",
    "/console/users",
    "/console/audit",
    "/console/push/profiles",
    "/console/push/templates",
]
STAFF_PUSH_PAGES = ["/console/push", "/console/push/matches", "/console/push/history"]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


@pytest.fixture
async def run(settings_factory: Any) -> AsyncIterator[RunningPipeline]:
    async with running_pipeline(settings_factory, ScriptedResponder()) as running:
        await create_staff(running.conninfo, "admin")
        await create_staff(running.conninfo, "agent", role="agent")
        yield running


def console_routes() -> list[tuple[str, str]]:
    routes: list[tuple[str, str]] = []
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path not in PUBLIC:
            path = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], route.path)
            routes.extend((method, path) for method in sorted(route.methods or ()))
    return routes


async def test_every_console_route_refuses_without_a_session(run: RunningPipeline) -> None:
    routes = console_routes()
    assert len(routes) >= 20  # the console's pages and forms, not an empty list
    for cookie in (None, "forged.cookie.value"):
        async with httpx.AsyncClient(base_url=run.base_url, headers={"Accept": "text/html"}) as http:
            if cookie:
                http.cookies.set("wxkf_console", cookie, path="/console")
            for method, path in routes:
                response = await http.request(method, path)
                if method == "GET" and not path.endswith(("/rows", "/panel", "/events")):
                    assert response.status_code == 303, (method, path)
                    assert response.headers["location"].startswith("/console/login?next="), path
                else:
                    assert response.status_code == 401, (method, path, response.status_code)
                    assert "请先登录" in response.text


async def test_posts_from_another_site_or_without_the_token_change_nothing(run: RunningPipeline) -> None:
    customer = run.sim.customers[0]
    await run.say(customer, "你好")
    await run.until(lambda: _has_conversation(run))
    takeover = f"/console/c/{run.sim.open_kfid}/{customer}/takeover"
    async with ConsoleClient(run.base_url) as staff:
        await staff.login("admin")
        attempts = [
            await staff.http.post(takeover, data={}),  # no token
            await staff.http.post(takeover, data={"csrf_token": "guessed"}),
            await staff.post(takeover, headers={"Origin": "https://evil.example"}),
            await staff.post(takeover, headers={"Referer": "https://evil.example/page"}),
            await staff.post(takeover, headers={"Sec-Fetch-Site": "cross-site"}),
        ]
        for response in attempts:
            assert response.status_code == 403
            assert "CSRF" in html.unescape(response.text)
        assert await run.query("SELECT * FROM console_takeovers") == []
        assert (await staff.post(takeover)).status_code == 303  # the page's own form works
    assert len(await run.query("SELECT * FROM console_takeovers")) == 1


async def _has_conversation(run: RunningPipeline) -> bool:
    return bool(await run.query("SELECT 1 FROM kf_conversations"))


async def test_a_cross_site_login_form_is_refused(run: RunningPipeline) -> None:
    async with ConsoleClient(run.base_url) as staff:
        page = await staff.get("/console/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        forged = await staff.http.post(
            "/console/login",
            data={"username": "admin", "password": PASSWORD, "csrf_token": token.group(1)},
            headers={"Origin": "https://evil.example"},
        )
        assert forged.status_code == 403
        without = await staff.http.post("/console/login", data={"username": "admin", "password": PASSWORD})
        assert without.status_code == 403
        assert "wxkf_console" not in staff.http.cookies


async def test_an_agent_cannot_see_admin_pages(run: RunningPipeline) -> None:
    async with ConsoleClient(run.base_url) as agent:
        await agent.login("agent")
        assert (await agent.get("/console/conversations")).status_code == 200
        page = await agent.get("/console/conversations")
        assert 'href="/console/kb"' not in page.text  # not offered in the navigation either
        for path in ADMIN_PAGES:
            response = await agent.get(path)
            assert response.status_code == 403, path
            assert "仅管理员" in html.unescape(response.text)
        for path, data in [
            ("/console/users", {"username": "mallory", "password": "12345678", "role": "admin"}),
            ("/console/users/1/disable", {}),
            ("/console/kb/delete", {"document_id": "1"}),
            ("/console/unanswered/1/entry", {"question": "q", "answer": "a"}),
            ("/console/push/profiles", {"name": "张三", "city": "北京"}),
            ("/console/push/templates", {"name": "default", "content": "{profile_name}"}),
            ("/console/push/templates/delete", {"name": "default"}),
        ]:
            assert (await agent.post(path, data)).status_code == 403, path
        imported = await agent.post(
            "/console/push/profiles/import", files={"file": ("p.csv", "name\n张三\n".encode(), "text/csv")}
        )
        assert imported.status_code == 403
        # Agents work with intents, matches and history; the profiles and templates are not offered.
        for path in STAFF_PUSH_PAGES:
            page = await agent.get(path)
            assert page.status_code == 200, path
            assert 'href="/console/push/profiles"' not in page.text
            assert 'href="/console/push/templates"' not in page.text
        assert 'href="/console/push"' in page.text
    assert [r[0] for r in await run.query("SELECT username FROM console_users ORDER BY id")] == [
        "admin",
        "agent",
    ]
    assert await _push_rows(run) == (0, 0, 0)
    async with ConsoleClient(run.base_url) as admin:
        await admin.login("admin")
        page = await admin.get("/console/push")
        assert 'href="/console/push/profiles"' in page.text
        assert 'href="/console/push/templates"' in page.text


async def _push_rows(run: RunningPipeline) -> tuple[Any, ...]:
    rows = await run.query(
        "SELECT (SELECT count(*) FROM push_profiles), (SELECT count(*) FROM push_intents),"
        " (SELECT count(*) FROM push_templates)"
    )
    return rows[0]


def _push_posts(run: RunningPipeline) -> list[tuple[str, dict[str, Any]]]:
    """Every push form with input it would accept, files included."""
    intent = {
        "open_kfid": run.sim.open_kfid,
        "external_userid": run.sim.customers[0],
        "name": "找投资人",
        "required": "city=北京",
    }
    card = {"name": "card", "kind": "miniprogram", "appid": "wx1", "pagepath": "pages/m"}
    posts: list[tuple[str, dict[str, Any]]] = [
        ("/console/push/intents", {"data": intent}),
        ("/console/push/intents/1/cancel", {}),
        ("/console/push/profiles", {"data": {"name": "张三", "city": "北京"}}),
        (
            "/console/push/profiles/import",
            {"files": {"file": ("p.csv", "name\n张三\n".encode(), "text/csv")}},
        ),
        ("/console/push/templates", {"data": card, "files": {"cover": ("c.png", PNG, "image/png")}}),
        ("/console/push/templates/delete", {"data": {"name": "default"}}),
    ]
    covered = {path.replace("/1/", "/{intent_id}/") for path, _ in posts}
    declared = {p for m, p in console_routes_raw() if m == "POST" and p.startswith("/console/push")}
    assert covered == declared  # a new push form is added here too
    return posts


def console_routes_raw() -> list[tuple[str, str]]:
    return [
        (method, route.path)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    ]


async def test_push_forms_from_another_site_or_without_the_token_change_nothing(run: RunningPipeline) -> None:
    await run.say(run.sim.customers[0], "你好")  # an intent is only for a customer who wrote
    await run.until(lambda: _has_conversation(run))
    async with ConsoleClient(run.base_url) as admin:
        await admin.login("admin")
        for path, form in _push_posts(run):
            data = form.get("data", {})
            attempts = [
                await admin.http.post(path, data=data, files=form.get("files")),  # no token
                await admin.http.post(path, data={**data, "csrf_token": "guessed"}, files=form.get("files")),
                await admin.post(
                    path, data, files=form.get("files"), headers={"Origin": "https://evil.example"}
                ),
                await admin.post(
                    path, data, files=form.get("files"), headers={"Sec-Fetch-Site": "cross-site"}
                ),
            ]
            for response in attempts:
                assert response.status_code == 403, (path, response.status_code)
                assert "CSRF" in html.unescape(response.text)
        assert await _push_rows(run) == (0, 0, 0)
        assert await run.query("SELECT 1 FROM console_audit WHERE starts_with(action, 'push_')") == []
        path, form = _push_posts(run)[0]
        assert (await admin.post(path, form["data"])).status_code == 303  # the page's own form works
    assert (await _push_rows(run))[1] == 1


async def test_a_script_in_an_intent_or_a_profile_is_shown_as_text(run: RunningPipeline) -> None:
    attack = '<script>document.title="pwned"</script><img src=x onerror="alert(1)">'
    await run.say(run.sim.customers[0], "你好")  # an intent is only for a customer who wrote
    await run.until(lambda: _has_conversation(run))
    async with ConsoleClient(run.base_url) as admin, ConsoleClient(run.base_url) as agent:
        await admin.login("admin")
        await agent.login("agent")
        await admin.get("/console/push/profiles")
        added = await admin.post(
            "/console/push/profiles",
            {"name": attack[:64], "city": "北京", "description": attack, "tags": attack[:32]},
        )
        assert added.status_code == 303
        await agent.get("/console/push")
        created = await agent.post(
            "/console/push/intents",
            {
                "open_kfid": run.sim.open_kfid,
                "external_userid": run.sim.customers[0],
                "name": attack[:50],
                "description": attack,
                "required": "city=北京",
                "threshold": "0",
            },
        )
        assert created.status_code == 303
        await run.until(lambda: run.query("SELECT 1 FROM push_matches"))
        pages = [(agent, created.headers["location"]), *((agent, p) for p in STAFF_PUSH_PAGES)]
        for staff, path in [*pages, (admin, "/console/push/profiles")]:
            response = await staff.get(path)
            assert response.status_code == 200, path
            assert "<script>document.title" not in response.text, path
            assert "<img src=x" not in response.text, path
            if not path.endswith("/history"):  # the history shows ids and reasons, no customer text
                assert "&lt;script&gt;document.title" in response.text, path
            assert "script-src 'self'" in response.headers["content-security-policy"]
        matches = await agent.get("/console/push/matches")
        assert matches.text.count("&lt;script&gt;") >= 2  # the intent's and the profile's names


def _refusal(response: httpx.Response) -> str:
    """The login page's error line."""
    [line] = [line for line in html.unescape(response.text).splitlines() if "用户名或密码错误" in line]
    return line.strip()


async def test_bad_passwords_are_refused_then_the_account_locks(run: RunningPipeline) -> None:
    async with ConsoleClient(run.base_url) as staff:
        unknown = await staff.login("nobody", "whatever-pass")
        wrong = await staff.login("agent", "wrong-password")
        assert unknown.status_code == wrong.status_code == 401
        assert "用户名或密码错误" in html.unescape(wrong.text)
        for _ in range(MAX_FAILED_LOGINS - 1):
            last = await staff.login("agent", "wrong-password")
        for _ in range(MAX_FAILED_LOGINS):
            last_unknown = await staff.login("nobody", "whatever-pass")
        refused = await staff.login("agent")  # the right password, during the lockout
        assert refused.status_code == 401
        # Locked or unknown, the words are the same: they never tell which names exist.
        assert {_refusal(r) for r in (unknown, wrong, last, last_unknown, refused)} == {_refusal(wrong)}
        assert "锁定" in _refusal(wrong)
    async with ConsoleClient(run.base_url) as admin:
        await admin.login("admin")
        (agent_id,) = (await run.query("SELECT id FROM console_users WHERE username = 'agent'"))[0]
        assert "解锁账号" in html.unescape(
            await admin.flash(await admin.post(f"/console/users/{agent_id}/unlock"))
        )
    async with ConsoleClient(run.base_url) as staff:
        assert (await staff.login("agent")).status_code == 303
    actions = [r[0] for r in await run.query("SELECT action FROM console_audit ORDER BY id")]
    assert actions.count("login_failed") == 2 * MAX_FAILED_LOGINS + 2


async def test_logging_out_ends_the_session_everywhere(run: RunningPipeline) -> None:
    async with ConsoleClient(run.base_url) as one, ConsoleClient(run.base_url) as two:
        await one.login("admin")
        await two.login("admin")
        assert (await one.post("/console/logout")).status_code == 303
        assert (await one.get("/console/conversations")).status_code == 303
        assert (await two.get("/console/conversations")).status_code == 303


async def test_customer_text_is_shown_escaped_with_a_strict_content_policy(run: RunningPipeline) -> None:
    customer = run.sim.customers[0]
    attack = '<script>document.title="pwned"</script><img src=x onerror="alert(1)">'
    await run.say(customer, attack)
    await run.until(lambda: _has_conversation(run))
    await run.idle()
    async with ConsoleClient(run.base_url) as staff:
        await staff.login("agent")
        for path in (
            "/console/conversations",
            "/console/conversations/rows",
            f"/console/c/{run.sim.open_kfid}/{customer}",
            f"/console/c/{run.sim.open_kfid}/{customer}/panel",
        ):
            response = await staff.get(path)
            assert response.status_code == 200
            assert "<script>document.title" not in response.text
            assert "<img src=x" not in response.text
            assert "&lt;script&gt;document.title" in response.text
            assert "script-src 'self'" in response.headers["content-security-policy"]


async def test_a_nul_in_any_query_parameter_or_path_is_never_a_server_error(run: RunningPipeline) -> None:
    """PostgreSQL text cannot hold U+0000: a page's filters and ids must not hand it one."""
    nul = "%00"
    query = "&".join(
        f"{name}={nul}"
        for name in ("q", "customer", "status", "view", "account", "state", "action", "edit", "next")
    )
    async with ConsoleClient(run.base_url) as admin:
        await admin.login("admin")
        for method, path in console_routes():
            if method != "GET" or path.endswith("/events"):
                continue
            for target in (f"{path}?{query}", re.sub(r"/(wkNOSUCH|wmNOSUCH|1)(?=/|$)", f"/x{nul}", path)):
                response = await admin.get(target)
                assert response.status_code < 500, (target, response.status_code)


async def test_a_locked_out_admin_gets_back_in_with_a_new_password_from_the_cli(
    run: RunningPipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only admin locked out has no other admin to unlock them: `wxkf console set-password` does."""
    monkeypatch.setenv("DATABASE_URL", run.conninfo)
    monkeypatch.setenv("WXKF_DATA_DIR", str(tmp_path / "var"))
    async with ConsoleClient(run.base_url) as staff:
        for _ in range(MAX_FAILED_LOGINS):
            await staff.login("admin", "wrong-password")
        assert (await staff.login("admin")).status_code == 401  # locked
    runner = CliRunner()
    unknown = await asyncio.to_thread(
        runner.invoke, cli, ["console", "set-password", "nobody", "--password-stdin"], "new-password-123\n"
    )
    assert unknown.exit_code == 1
    assert "没有这个账号" in unknown.output
    short = await asyncio.to_thread(
        runner.invoke, cli, ["console", "set-password", "admin", "--password-stdin"], "short\n"
    )
    assert short.exit_code == 1
    assert "Traceback" not in short.output
    changed = await asyncio.to_thread(
        runner.invoke, cli, ["console", "set-password", "admin", "--password-stdin"], "new-password-123\n"
    )
    assert changed.exit_code == 0, changed.output
    assert "已为 admin 设置新密码并解锁" in changed.output
    async with ConsoleClient(run.base_url) as staff:
        assert (await staff.login("admin", "new-password-123")).status_code == 303
        assert (await staff.login("admin")).status_code == 401  # the old password no longer works
