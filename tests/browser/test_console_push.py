"""Push in the console, in a real browser: an admin adds profiles, an agent creates a customer's intent,
the match appears with its score and the push reaches the customer in the WeCom simulator."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from playwright.sync_api import Page, expect

from tests.browser.conftest import AGENT, Console, log_in


def _pushes(console: Console, customer: str) -> list[str]:
    """What push sent the customer (push outbox msgids start with "p")."""
    return [
        r["text"]["content"]
        for r in console.sim.control.received(customer)
        if r.get("via") == "send_msg" and r["msgid"].startswith("p") and r["msgtype"] == "text"
    ]


def test_a_profile_and_an_intent_made_in_the_console_become_a_push_the_customer_receives(
    page: Page, console: Console, tmp_path: Path
) -> None:
    customer = console.sim.customers[6]
    console.llm.reply("您好，请问需要什么帮助？")
    console.say(customer, "我想找北京做 AI 的创业伙伴")  # opens WeCom's 48 h window
    console.until(lambda: len(console.received(customer)) == 1)

    log_in(page, console)  # the admin: profiles
    page.goto(console.url("/console/push/profiles"))
    page.fill("#profile-form input[name=name]", "张三")
    page.fill("#profile-form input[name=city]", "北京")
    page.fill("#profile-form input[name=company]", "智源科技")
    page.fill("#profile-form input[name=position]", "AI 创业者")
    page.fill("#profile-form input[name=tags]", "AI，创业")
    page.fill("#profile-form textarea[name=description]", "连续创业者，做大模型应用")
    page.click("#profile-form button[type=submit]")
    expect(page.locator(".flash.ok")).to_contain_text("已添加")
    people = tmp_path / "people.csv"
    people.write_text("姓名,城市,职位,标签\n李四,上海,AI 工程师,AI\n", encoding="utf-8")
    page.set_input_files("#import-form input[type=file]", str(people))
    page.click("#import-form button[type=submit]")
    expect(page.locator(".flash.ok")).to_contain_text("已导入 1 行")
    expect(page.locator("#profiles")).to_contain_text("张三")
    expect(page.locator("#profiles")).to_contain_text("李四")
    page.click("form.who button[type=submit]")  # log out

    log_in(page, console, AGENT)  # an agent, from the customer's conversation: their intent
    expect(page.locator("header nav a[href='/console/push']")).to_be_visible()
    page.goto(console.conversation(customer))
    page.click("#customer-intents")
    expect(page.locator("#push-tabs a[href='/console/push/profiles']")).to_have_count(0)
    expect(page.locator("#intent-form input[name=open_kfid]")).to_have_value(console.sim.open_kfid)
    expect(page.locator("#intent-form input[name=external_userid]")).to_have_value(customer)
    page.fill("#intent-form input[name=name]", "寻找AI合作伙伴")
    page.fill("#intent-form input[name=description]", "想找北京做 AI 的创业伙伴")
    page.fill("#intent-form textarea[name=required]", "city=北京")
    page.fill("#intent-form input[name=keywords]", "AI，创业")
    page.fill("#intent-form input[name=threshold]", "0.5")
    # The LLM re-checks the new match (PUSH_LLM_RERANK): its verdict, as the model would answer.
    console.llm.reply(
        json.dumps({"match": True, "score": 0.9, "reason": "北京的 AI 创业者"}, ensure_ascii=False)
    )
    page.click("#intent-form button[type=submit]")
    expect(page.locator(".flash.ok")).to_contain_text("已创建")
    expect(page.locator("#intent")).to_contain_text("城市 = 北京")

    console.until(lambda: bool(_pushes(console, customer)), timeout=30)
    (pushed,) = _pushes(console, customer)
    assert "【张三】符合您的意图【寻找AI合作伙伴】" in pushed
    assert "李四" not in pushed
    page.reload()
    match = page.locator("#matches tr", has_text="张三")
    expect(match).to_contain_text("已推送 / pushed")
    expect(match).to_contain_text("%")
    expect(match).to_contain_text("模型判断：北京的 AI 创业者")
    expect(page.locator("#matches")).not_to_contain_text("李四")  # Shanghai: the required city rules it out
    expect(page.locator("#history")).to_contain_text("已发送 / sent")
    expect(page.locator("#history")).to_contain_text("已送达 / delivered")
    console.screenshot(page, "push-intent")
    page.click("#push-tabs a[href='/console/push/matches']")
    expect(page.locator("#matches")).to_contain_text("张三")
    with psycopg.connect(console.conninfo) as conn:
        actions = [
            r[0]
            for r in conn.execute(
                "SELECT action FROM console_audit WHERE starts_with(action, 'push_') ORDER BY id"
            )
        ]
    assert actions == ["push_profile_add", "push_profile_import", "push_intent_add"]
