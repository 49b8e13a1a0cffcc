"""What staff do in the console, in a real browser, against the whole service and the WeCom simulator."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import psycopg
from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import AGENT, Console, log_in


def _got(console: Console, customer: str, n: int) -> bool:
    return len(console.received(customer)) >= n


def _rows_of(console: Console, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(console.conninfo) as conn:
        return list(conn.execute(sql).fetchall())


def test_a_customer_message_appears_live_in_the_list(page: Page, console: Console) -> None:
    customer = console.sim.customers[0]
    log_in(page, console)
    expect(page.locator("#live-status.on")).to_be_visible()  # the event stream is open
    page.evaluate("window.stillTheSamePage = true")
    console.llm.reply("满 99 元包邮，不满收 8 元运费。")
    console.say(customer, "运费怎么算？")
    row = page.locator(f'tr[data-key="{console.sim.open_kfid} {customer}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("满 99 元包邮")
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded
    console.screenshot(page, "conversations")


def test_take_over_reply_and_hand_back(page: Page, console: Console) -> None:
    customer = console.sim.customers[1]
    console.llm.reply("您好，请问有什么可以帮您？")
    console.say(customer, "我的订单什么时候到？")
    console.until(lambda: len(console.received(customer)) == 1)
    log_in(page, console)
    page.goto(console.conversation(customer))
    page.click("#takeover")
    expect(page.locator(".flash.ok")).to_contain_text("已接管")
    expect(page.locator("#budget-before")).to_contain_text("剩余 4/5 条")
    page.fill("#reply-form textarea", "我是人工客服小李，您的订单今天下午送达。")
    page.click("#reply-form button[type=submit]")
    expect(page.locator(".flash.ok")).to_contain_text("已加入发送队列")
    console.until(lambda: console.received(customer)[-1:] == ["我是人工客服小李，您的订单今天下午送达。"])
    console.say(customer, "好的，谢谢")  # the bot is paused: no answer, and the page says why, live
    expect(page.locator("#thread")).to_contain_text("好的，谢谢")
    expect(page.locator("#thread")).to_contain_text("人工接管中，机器人未回复")
    # The customer wrote: a fresh window, and the reply form's budget follows the live panel.
    expect(page.locator("#budget-before")).to_contain_text("剩余 5/5 条")
    assert len(console.received(customer)) == 2
    console.screenshot(page, "conversation")
    page.click("#handback")
    expect(page.locator(".flash.ok")).to_contain_text("已交还机器人")
    console.llm.reply("不客气，还有什么可以帮您？")
    console.say(customer, "还有一个问题")
    console.until(lambda: console.received(customer)[-1:] == ["不客气，还有什么可以帮您？"])
    expect(page.locator("#thread")).to_contain_text("不客气，还有什么可以帮您？")


def test_the_reply_box_says_live_why_it_cannot_send(page: Page, console: Console) -> None:
    customer, servicer = console.sim.customers[7], console.sim.servicers[0]
    console.llm.reply("您好，请问有什么可以帮您？")
    console.say(customer, "你们几点关门？")
    console.until(lambda: len(console.received(customer)) == 1)
    log_in(page, console)
    page.goto(console.conversation(customer))
    page.click("#takeover")
    send = page.locator("#reply-form button[type=submit]")
    expect(send).to_be_enabled()
    expect(page.locator("#reply-blocked")).to_be_hidden()
    # WeCom counts 2048 bytes, not characters: 700 Chinese characters are 2100 bytes, said as typed.
    box = page.locator("#reply-form textarea")
    box.fill("好" * 700)
    expect(page.locator("#reply-bytes")).to_contain_text("2100 / 2048")
    expect(send).to_be_disabled()
    box.fill("好" * 600)
    expect(page.locator("#reply-bytes")).to_contain_text("1800 / 2048")
    expect(send).to_be_enabled()
    box.fill("")
    console.sim.control.take(customer, servicer)  # a servicer serves in WeCom: the console must not send
    expect(send).to_be_disabled()
    expect(page.locator("#reply-blocked")).to_contain_text(f"会话正由接待人员 {servicer} 在企业微信中接待")
    console.sim.control.end(customer)
    expect(page.locator("#reply-blocked")).to_contain_text("会话已结束（state 4）")
    expect(page.locator("#state")).to_contain_text("已结束")
    console.say(customer, "那会员卡怎么充值？")  # a new session (wecom-api §6): staff can answer again
    expect(page.locator("#state")).to_contain_text("未处理")
    expect(send).to_be_enabled()
    expect(page.locator("#reply-blocked")).to_be_hidden()


def test_upload_a_document_and_search_it(page: Page, console: Console, tmp_path: Path) -> None:
    document = tmp_path / "发货与退货.md"
    document.write_text(
        "# 发货时间\n\n付款后 48 小时内从杭州仓发货，节假日顺延。\n\n"
        "# 退货运费\n\n收到商品 7 天内可无理由退货；质量问题由我们承担来回运费。\n",
        encoding="utf-8",
    )
    log_in(page, console)
    page.goto(console.url("/console/kb"))
    page.set_input_files("#kb-upload input[type=file]", str(document))
    page.click("#kb-upload button[type=submit]")
    expect(page.locator("#upload-progress")).to_be_visible()
    expect(page.locator("#upload-status")).to_contain_text("完成")
    expect(page.locator("#documents")).to_contain_text("发货与退货.md")
    page.fill("input[name=q]", "付款以后多久发货？")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#decision")).to_contain_text("相关，机器人会据此回答")
    expect(page.locator("#preview")).to_contain_text("付款后 48 小时内从杭州仓发货")
    expect(page.locator("#preview")).to_contain_text("similarity=")
    console.screenshot(page, "knowledge-base")
    page.fill("input[name=q]", "今天天气怎么样")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#decision")).to_contain_text("没有足够相关的内容")


def test_an_unanswered_question_becomes_an_entry_with_the_takeover_answer(
    page: Page, console: Console
) -> None:
    first, second = console.sim.customers[2], console.sim.customers[3]
    for customer, question in ((first, "可以开增值税专用发票吗？"), (second, "能开增值税专用发票吗")):
        console.llm.reply("这个问题我需要确认一下，请稍候。")
        console.say(customer, question)
        console.until(partial(_got, console, customer, 1))
    answer = "可以开专票，请把公司抬头和税号发给我们。"
    log_in(page, console)
    page.goto(console.conversation(first))
    page.click("#takeover")
    page.fill("#reply-form textarea", answer)
    page.click("#reply-form button[type=submit]")
    console.until(lambda: console.received(first)[-1:] == [answer])
    page.goto(console.url("/console/unanswered"))
    group = page.locator(".group", has_text="增值税专用发票")
    expect(group.locator(".count")).to_have_text("2")  # both customers' questions, grouped
    expect(group.locator("textarea[name=answer]")).to_have_value(answer)  # the takeover's answer
    console.screenshot(page, "unanswered")
    group.locator("button[type=submit]").click()
    expect(page.locator(".flash.ok")).to_contain_text("已加入知识库")
    expect(page.locator(".group", has_text="增值税专用发票")).to_have_count(0)
    page.goto(console.url("/console/kb?q=" + "能不能开专用发票"))
    expect(page.locator("#decision")).to_contain_text("相关，机器人会据此回答")
    expect(page.locator("#preview")).to_contain_text(answer)


def test_a_bad_password_and_a_missing_csrf_token_are_refused(page: Page, console: Console) -> None:
    page.goto(console.url("/console/login"))
    page.fill("input[name=username]", AGENT)
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator(".flash.error")).to_contain_text("用户名或密码错误")
    assert "/console/login" in page.url
    customer = console.sim.customers[4]
    console.llm.reply("您好！")
    console.say(customer, "在吗")
    console.until(lambda: len(console.received(customer)) == 1)
    log_in(page, console, AGENT)
    page.goto(console.conversation(customer))
    page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
    page.click("#takeover")
    expect(page.locator(".flash.error")).to_contain_text("CSRF")
    assert _rows_of(console, f"SELECT 1 FROM console_takeovers WHERE external_userid = '{customer}'") == []


def test_customer_script_is_shown_not_run(page: Page, console: Console) -> None:
    customer = console.sim.customers[5]
    attack = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
    console.llm.reply("收到")
    console.say(customer, attack)
    console.until(lambda: len(console.received(customer)) == 1)
    dialogs: list[str] = []

    def dialog_opened(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dialog_opened)
    log_in(page, console, AGENT)
    expect(page.locator("#rows")).to_contain_text("收到")
    page.goto(console.conversation(customer))
    expect(page.locator("#thread")).to_contain_text('<script>document.title="pwned"</script>')
    assert page.title() != "pwned"
    assert page.locator("#thread img").count() == 0
    assert dialogs == []


def test_overview_and_doctor_pages(page: Page, console: Console) -> None:
    log_in(page, console)
    page.goto(console.url("/console/overview"))
    expect(page.locator("#messages")).not_to_have_text("0")
    expect(page.locator("svg.chart").first).to_be_visible()
    console.screenshot(page, "overview")
    page.goto(console.url("/console/doctor"))
    expect(page.locator("#doctor")).to_contain_text("数据库")
    console.screenshot(page, "doctor")
