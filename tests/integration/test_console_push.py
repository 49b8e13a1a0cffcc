"""The console's push pages over HTTP: bad input is a clear 4xx that changes nothing, a card's cover goes
through the media store, and each push decision is shown in words."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.console_client import ConsoleClient, create_staff
from tests.integration.push_harness import PushRun, at_local_hour, push_pipeline

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
COUNTS = (
    "SELECT (SELECT count(*) FROM push_profiles), (SELECT count(*) FROM push_intents),"
    " (SELECT count(*) FROM push_templates)"
)


@pytest.fixture
async def run(settings_factory: Any) -> AsyncIterator[PushRun]:
    async with push_pipeline(settings_factory) as running:
        await create_staff(running.run.conninfo, "admin")
        yield running


async def _counts(run: PushRun) -> tuple[Any, ...]:
    return (await run.run.query(COUNTS))[0]


def _refused(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text[:2000])
    text = html.unescape(response.text)
    for word in words:
        assert word in text, (word, text[:3000])
    return text


async def test_bad_files_templates_intents_and_ids_are_a_clear_4xx_and_change_nothing(run: PushRun) -> None:
    customer = run.sim.customers[0]
    async with ConsoleClient(run.run.base_url) as admin:
        await admin.login("admin")
        await admin.get("/console/push/profiles")

        def upload(name: str, data: bytes) -> dict[str, Any]:
            return {"files": {"file": (name, data, "application/octet-stream")}}

        bad_csv = "name,city,age\n张三,北京,35\n李四,上海,三十\n,广州,20\n".encode()
        text = _refused(
            await admin.post("/console/push/profiles/import", **upload("people.csv", bad_csv)),
            422,
            "未导入任何资料",
            "第 3 行 / line 3: age",
            "第 4 行 / line 4: name",
        )
        assert "第 2 行" not in text  # the good row is not listed
        bad_jsonl = '{"name": "王五", "city": "北京"}\n{"name": "赵六",\n'.encode()
        _refused(
            await admin.post("/console/push/profiles/import", **upload("people.jsonl", bad_jsonl)),
            422,
            "第 2 行 / line 2: 不是有效的 JSON",
        )
        with_nul = "name,city\n张三,北京\n李\x00四,上海\n".encode()
        _refused(
            await admin.post("/console/push/profiles/import", **upload("nul.csv", with_nul)),
            422,
            "第 3 行 / line 3: name: 含有 NUL 字符",
        )
        _refused(
            await admin.post("/console/push/profiles/import", **upload("people.xlsx", b"PK\x03\x04")),
            422,
            "只支持 .csv 和 .jsonl",
        )
        _refused(
            await admin.post("/console/push/profiles/import", files={"other": ("x", b"", "text/plain")}),
            422,
            "没有选择文件",
        )
        _refused(
            await admin.post("/console/push/profiles", {"name": "张\x00三", "city": "北京"}),
            422,
            "name: 含有 NUL 字符",
        )
        _refused(await admin.post("/console/push/profiles", {"name": " ", "age": "三十"}), 422, "age")

        await admin.get("/console/push/templates")
        _refused(
            await admin.post("/console/push/templates", {"name": "short", "content": "{score_pct}"}),
            422,
            "「{score_pct}」不是可用的占位符",
        )
        _refused(
            await admin.post(
                "/console/push/templates",
                {"name": "card", "kind": "miniprogram", "appid": "wx8bd80126147dfAAA"},
                files={"cover": ("cover.png", PNG, "image/png")},
            ),
            422,
            "pagepath",
        )
        _refused(
            await admin.post(
                "/console/push/templates",
                {"name": "card", "kind": "miniprogram", "appid": "wx1", "pagepath": "pages/m"},
            ),
            422,
            "小程序卡片需要封面图",
        )
        _refused(
            await admin.post(
                "/console/push/templates",
                {"name": "card", "kind": "miniprogram", "appid": "wx1", "pagepath": "pages/m"},
                files={"cover": ("cover.gif", b"GIF89a" + bytes(40), "image/gif")},
            ),
            422,
            "封面须是 JPG 或 PNG",
        )
        _refused(
            await admin.post(
                "/console/push/templates",
                {"name": "card", "kind": "miniprogram", "appid": "wx1", "pagepath": "p", "thumb": "0" * 64},
            ),
            422,
        )
        _refused(
            await admin.post("/console/push/templates", {"name": "t\x00", "content": "hi"}),
            422,
            "name: 含有 NUL 字符",
        )

        await admin.get("/console/push")
        intent = {
            "open_kfid": run.sim.open_kfid,
            "external_userid": customer,
            "name": "找投资人",
            "required": "city=北京",
        }
        _refused(await admin.post("/console/push/intents", {**intent, "name": "找\x00投资人"}), 422, "NUL")
        form = _refused(
            await admin.post("/console/push/intents", {**intent, "required": "city=北京\ncity>3"}),
            422,
            "required「city>3」",
            "需要数字",
        )
        assert "city=北京\ncity&gt;3" in form or "city=北京\ncity>3" in form  # the form is filled again
        _refused(
            await admin.post("/console/push/intents", {**intent, "required": "城市就行"}), 422, "条件写法"
        )
        _refused(await admin.post("/console/push/intents", {**intent, "external_userid": ""}), 422)
        _refused(
            await admin.post("/console/push/intents", {**intent, "open_kfid": "nope"}),
            422,
            "不是本部署的客服账号",
        )
        _refused(await admin.post("/console/push/intents", {**intent, "threshold": "2"}), 422, "threshold")

        for path in (
            "/console/push/intents/999",
            "/console/push/intents/abc",
            "/console/push/intents/" + "9" * 30,
        ):
            _refused(await admin.get(path), 404, "没有编号为")
        _refused(await admin.post("/console/push/intents/999/cancel"), 404, "没有编号为 999 的意图")
        _refused(await admin.post("/console/push/templates/delete", {"name": "nope"}), 404, "没有名为 nope")
        for query in ("status=bogus&customer=%00", "status=all"):
            assert (await admin.get(f"/console/push?{query}")).status_code == 200
        assert (await admin.get("/console/push/matches?view=bogus&customer=x")).status_code == 200
        assert (await admin.get("/console/push/history?status=bogus")).status_code == 200
        assert (await admin.get("/console/push/profiles?q=%00")).status_code == 200
        assert (await admin.get("/console/push/templates?edit=nope")).status_code == 200
    assert await _counts(run) == (0, 0, 0)
    actions = await run.run.query("SELECT action FROM console_audit WHERE starts_with(action, 'push_')")
    assert actions == []


async def test_a_card_template_keeps_its_cover_in_the_media_store_and_is_edited_then_deleted(
    run: PushRun,
) -> None:
    async with ConsoleClient(run.run.base_url) as admin:
        await admin.login("admin")
        await admin.get("/console/push/templates")
        card = {
            "name": "card",
            "kind": "miniprogram",
            "appid": "wx8bd80126147dfAAA",
            "pagepath": "pages/match?no={match_id}",
            "title": "{profile_name} 符合【{intent_name}】",
        }
        saved = await admin.post(
            "/console/push/templates", card, files={"cover": ("cover.png", PNG, "image/png")}
        )
        assert "模板 card 已保存" in html.unescape(await admin.flash(saved))
        kind, body = (await run.run.query("SELECT kind, body FROM push_templates WHERE name = 'card'"))[0]
        assert kind == "miniprogram"
        assert await run.push.pipeline.media_store.get(body["thumb"]) == PNG
        page = await admin.get("/console/push/templates?edit=card")
        assert f'name="thumb" value="{body["thumb"]}"' in page.text  # editing keeps the cover
        edited = await admin.post(
            "/console/push/templates", {**card, "title": "新标题 {profile_name}", "thumb": body["thumb"]}
        )
        assert edited.status_code == 303
        (after,) = (await run.run.query("SELECT body FROM push_templates WHERE name = 'card'"))[0]
        assert (after["title"], after["thumb"]) == ("新标题 {profile_name}", body["thumb"])
        deleted = await admin.post("/console/push/templates/delete", {"name": "card"})
        assert "模板 card 已删除" in html.unescape(await admin.flash(deleted))
    assert await run.run.query("SELECT * FROM push_templates") == []
    actions = [
        r[0]
        for r in await run.run.query(
            "SELECT action FROM console_audit WHERE starts_with(action, 'push_') ORDER BY id"
        )
    ]
    assert actions == ["push_template_save", "push_template_save", "push_template_delete"]


async def test_a_push_held_by_quiet_hours_and_one_refused_for_a_closed_window_are_explained(
    run: PushRun,
) -> None:
    awake, silent = run.sim.customers[0], run.sim.customers[1]
    await run.run.say(silent, "你好")  # then silent for more than WeCom's 48 h
    await run.run.until(lambda: run.run.texts(silent))
    await run.advance(49 * 3600)
    await at_local_hour(run, 23)  # Asia/Shanghai: inside the default quiet hours 22:00-08:00
    await run.run.say(awake, "你好")  # opens this customer's 48 h window
    await run.run.until(lambda: run.run.texts(awake))
    async with ConsoleClient(run.run.base_url) as admin:
        await admin.login("admin")
        await admin.get("/console/push/profiles")
        added = await admin.post(
            "/console/push/profiles",
            {
                "name": "张三",
                "city": "北京",
                "company": "智源科技",
                "position": "AI 创业者",
                "tags": "AI，创业",
            },
        )
        assert added.status_code == 303
        await admin.get("/console/push")
        for customer in (awake, silent):
            created = await admin.post(
                "/console/push/intents",
                {
                    "open_kfid": run.sim.open_kfid,
                    "external_userid": customer,
                    "name": "寻找AI合作伙伴",
                    "required": "city=北京",
                    "keywords": "AI，创业",
                    "threshold": "0.5",
                },
            )
            assert created.status_code == 303
        await run.run.until(lambda: _history_has(run, "scheduled", "dropped"))
        waiting = html.unescape((await admin.get("/console/push/matches?view=waiting")).text)
        assert "客户的静默时段，结束后推送" in waiting
        assert "张三" in waiting
        refused = html.unescape(
            (await admin.get(f"/console/push/matches?view=refused&customer={silent}")).text
        )
        assert "客户 48 小时内未发消息，企业微信不允许发送" in refused
        assert awake not in refused
        history = html.unescape((await admin.get("/console/push/history")).text)
        assert "已排期 / scheduled" in history
        assert "未发送 / not sent" in history
    assert await run.pushes(awake) == []  # held, not sent at night
    actions = [
        r[0]
        for r in await run.run.query(
            "SELECT action FROM console_audit WHERE starts_with(action, 'push_') ORDER BY id"
        )
    ]
    assert actions == ["push_profile_add", "push_intent_add", "push_intent_add"]


async def _history_has(run: PushRun, *statuses: str) -> bool:
    found = await run.run.query("SELECT DISTINCT status FROM push_history")
    return {r[0] for r in found} >= set(statuses)
