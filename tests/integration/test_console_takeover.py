"""Taking a conversation over in the console, against the simulator: WeCom's rules hold for staff too.

wecom-api §4: 5 messages per customer message within 48 h, and only in state 0 or 1 (else 95018).
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

from tests.integration.console_client import ConsoleClient, create_staff
from tests.integration.kf_harness import RunningPipeline, ScriptedResponder, running_pipeline


def _conversation_url(run: RunningPipeline, customer: str) -> str:
    return f"/console/c/{run.sim.open_kfid}/{customer}"


async def _staff_rows(run: RunningPipeline, customer: str) -> list[tuple[Any, ...]]:
    return await run.query(
        "SELECT status, body ->> 'content' FROM kf_outbox WHERE external_userid = %s AND kind = 'staff' ORDER BY id",
        customer,
    )


async def test_a_staff_reply_is_never_the_6th_message_of_a_window(settings_factory: Any) -> None:
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        customer = run.sim.customers[0]
        await create_staff(run.conninfo, "alice")
        await run.say(customer, "你好，我想问一下")
        await run.until(lambda: _count(run, customer, 1))  # the bot's answer: 1 of 5 used
        async with ConsoleClient(run.base_url) as staff:
            await staff.login("alice")
            url = _conversation_url(run, customer)
            assert (await staff.post(f"{url}/takeover")).status_code == 303
            page = await staff.get(url)
            assert "剩余 4/5 条" in html.unescape(page.text)  # the budget is shown before sending
            # Five replies at once for the window's four messages left: the budget's lock lets four through.
            await asyncio.gather(
                *(
                    staff.post(f"{url}/reply", {"text": f"人工回复 {n}", "reply_token": f"t{n}"})
                    for n in range(5)
                )
            )
            outcomes = await run.query("SELECT action FROM console_audit WHERE action LIKE 'reply%%'")
            assert sorted(a for (a,) in outcomes) == ["reply"] * 4 + ["reply_refused"]
            refused = await staff.post(f"{url}/reply", {"text": "第六条", "reply_token": "t6"})
            message = html.unescape(await staff.flash(refused))
            assert "没有发送" in message
            assert "5 条已用完" in message
        await run.until(lambda: _count(run, customer, 5))
        await run.idle()
        texts = await run.texts(customer)
        assert len(texts) == 5
        assert "第六条" not in texts
        assert [c for c in await run.control("calls", "kf/send_msg") if c.get("errcode")] == []
        staff_texts = [row[1] for row in await _staff_rows(run, customer)]
        assert len(staff_texts) == 4
        assert set(staff_texts) < {f"人工回复 {n}" for n in range(5)}


async def _count(run: RunningPipeline, customer: str, n: int) -> bool:
    return len(await run.texts(customer)) >= n


async def test_a_staff_reply_is_never_sent_while_a_servicer_serves_in_wecom(settings_factory: Any) -> None:
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        customer = run.sim.customers[0]
        await create_staff(run.conninfo, "alice")
        await run.say(customer, "在吗")
        await run.until(lambda: _count(run, customer, 1))
        async with ConsoleClient(run.base_url) as staff:
            await staff.login("alice")
            url = _conversation_url(run, customer)
            await staff.post(f"{url}/takeover")
            await run.control("take", customer, run.sim.servicers[0])  # state 3 in WeCom
            calls_before = len(await run.control("calls", "kf/send_msg"))
            refused = await staff.post(f"{url}/reply", {"text": "你好", "reply_token": "s1"})
            message = html.unescape(await staff.flash(refused))
            assert "state 3" in message
            assert "95018" in message
        assert await _staff_rows(run, customer) == []
        assert len(await run.control("calls", "kf/send_msg")) == calls_before


async def test_take_over_then_hand_back_the_bot_answers_again(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer = run.sim.customers[0]
        await create_staff(run.conninfo, "alice")
        await create_staff(run.conninfo, "bob", role="agent")
        async with ConsoleClient(run.base_url) as alice, ConsoleClient(run.base_url) as bob:
            await alice.login("alice")
            await bob.login("bob")
            url = _conversation_url(run, customer)
            await run.say(customer, "第一个问题")
            await run.until(lambda: _count(run, customer, 1))
            await alice.post(f"{url}/takeover")
            taken = await bob.post(f"{url}/takeover")
            assert "alice" in html.unescape(await bob.flash(taken))  # one holder at a time
            await run.say(customer, "人工在吗")
            await run.idle()
            assert len(await run.texts(customer)) == 1  # the bot is paused
            thread = html.unescape((await alice.get(url)).text)
            assert "人工接管中，机器人未回复" in thread
            await alice.post(f"{url}/reply", {"text": "我是人工客服小李", "reply_token": "a1"})
            await run.until(lambda: _count(run, customer, 2))
            assert (await run.texts(customer))[-1] == "我是人工客服小李"
            refused = await bob.post(f"{url}/handback")
            assert "只有本人或管理员" in html.unescape(await bob.flash(refused))
            assert "已交还机器人" in html.unescape(await alice.flash(await alice.post(f"{url}/handback")))
            await run.say(customer, "第二个问题")
            await run.until(lambda: _count(run, customer, 3))
            assert (await run.texts(customer))[-1] == "答复：第二个问题"
        actions = [r[0] for r in await run.query("SELECT action FROM console_audit ORDER BY id")]
        assert actions == ["login", "login", "takeover", "reply", "handback"]


async def test_native_handoff_and_end_session_go_through_wecom(settings_factory: Any) -> None:
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        customer = run.sim.customers[0]
        await create_staff(run.conninfo, "alice")
        await run.say(customer, "转人工")
        await run.until(lambda: _count(run, customer, 1))
        servicer = run.sim.servicers[0]
        async with ConsoleClient(run.base_url) as staff:
            await staff.login("alice")
            url = _conversation_url(run, customer)
            page = html.unescape((await staff.get(url)).text)
            assert f'<option value="{servicer}"' in page  # from kf/servicer/list
            stranger = await staff.post(f"{url}/transfer", {"servicer": "nobody"})
            assert "不是该客服账号的接待人员" in html.unescape(await staff.flash(stranger))
            done = await staff.post(f"{url}/transfer", {"servicer": servicer})
            assert "已转给接待人员" in html.unescape(await staff.flash(done))
            assert (await run.control("session", customer))["service_state"] == 3
            ended = await staff.post(f"{url}/end")
            assert "会话已结束" in html.unescape(await staff.flash(ended))
            assert (await run.control("session", customer))["service_state"] == 4
            again = await staff.post(f"{url}/end")
            assert "已经结束" in html.unescape(await staff.flash(again))


async def test_the_list_filters_by_what_needs_doing_and_searches(settings_factory: Any) -> None:
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        answered, paused, human = run.sim.customers[:3]
        await create_staff(run.conninfo, "alice")
        for customer, text in ((answered, "运费怎么算"), (paused, "我要退货"), (human, "发票抬头写错了")):
            await run.say(customer, text)
        await run.until(lambda: all_answered(run, [answered, paused, human]))
        await run.control("take", human, run.sim.servicers[0])  # a servicer serves in WeCom
        await run.say(human, "还在吗")
        await run.idle()
        async with ConsoleClient(run.base_url) as staff:
            await staff.login("alice")
            await staff.post(f"{_conversation_url(run, paused)}/takeover")

            async def listed(**params: str) -> set[str]:
                page = (await staff.get("/console/conversations/rows", params=params)).text
                return {c for c in (answered, paused, human) if f"{run.sim.open_kfid} {c}" in page}

            assert await listed() == {answered, paused, human}
            assert await listed(paused="1") == {paused}
            assert await listed(state="3") == {human}
            assert await listed(account=run.sim.open_kfid) == {answered, paused, human}
            assert await listed(account="wkOTHER") == set()
            assert await listed(q="退货") == {paused}  # the customer's words
            assert await listed(q="答复：运费") == {answered}  # the bot's words
            assert await listed(q=human[:8]) == {human}  # the customer's id
            assert await listed(q="%") == set()  # a wildcard is a character, not a pattern


async def all_answered(run: RunningPipeline, customers: list[str]) -> bool:
    return all([len(await run.texts(c)) >= 1 for c in customers])


async def test_the_overview_explains_errors_with_the_catalogs_fix(settings_factory: Any) -> None:
    from wxkf.wecom.catalog import entry_for

    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        customer = run.sim.customers[0]
        await create_staff(run.conninfo, "alice")
        await run.say(customer, "在吗")
        await run.until(lambda: _count(run, customer, 1))
        await run.control("take", customer, run.sim.servicers[0])
        await run.query(  # what a send refused in state 3 leaves in the outbox
            "INSERT INTO kf_outbox (open_kfid, external_userid, msgid, kind, msgtype, body, status, errcode, error) "
            "VALUES (%s, %s, 'r-failed', 'reply', 'text', '{\"content\": \"x\"}', 'failed', 95018, 'invalid') "
            "RETURNING 1",
            run.sim.open_kfid,
            customer,
        )
        async with ConsoleClient(run.base_url) as staff:
            await staff.login("alice")
            page = html.unescape((await staff.get("/console/overview")).text)
        entry = entry_for(95018)
        assert entry is not None
        assert "<td>95018</td>" in page
        assert entry.fix_zh[0] in page
        assert '<span class="n" id="messages">1</span>' in page
        assert '<span class="n" id="answer-rate">100%</span>' in page


def _reply_form(page: str) -> str:
    start = page.index('id="reply-form"')
    return page[start : page.index("</form>", start)]


def _state_shown(page: str) -> str:
    start = page.index('<dd id="state">')
    return page[start : page.index("</dd>", start)]


async def test_a_customer_back_after_the_servicer_ended_can_be_answered_from_the_console(
    settings_factory: Any,
) -> None:
    """wecom-api §6: the customer's message after state 4 opens a new session. The console follows
    what the pipeline knows, so staff who took over see it and can answer."""
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        customer, servicer = run.sim.customers[0], run.sim.servicers[0]
        await create_staff(run.conninfo, "alice")
        await run.say(customer, "你们几点关门？")
        await run.until(lambda: _count(run, customer, 1))
        await run.control("take", customer, servicer)
        await run.control("servicer_reply", customer, servicer, "您好，我们晚上21点关门")
        await run.control("end", customer)
        await run.idle()
        async with ConsoleClient(run.base_url) as staff:
            await staff.login("alice")
            url = _conversation_url(run, customer)
            await staff.post(f"{url}/takeover")
            page = html.unescape((await staff.get(url)).text)
            assert "已结束" in _state_shown(page)
            form = _reply_form(page)
            assert "disabled" in form
            assert "会话已结束（state 4），等客户再次发消息后才能回复" in form  # says why, in words
            await run.say(customer, "那会员卡怎么充值？")  # the takeover holds the bot: staff answer
            await run.idle()
            page = html.unescape((await staff.get(url)).text)
            assert "已结束" not in _state_shown(page)
            assert "未处理" in _state_shown(page)
            assert "disabled" not in _reply_form(page)
            sent = await staff.post(f"{url}/reply", {"text": "会员卡可在前台充值", "reply_token": "r1"})
            assert "已加入发送队列" in html.unescape(await staff.flash(sent))
        await run.until(lambda: _count(run, customer, 2))
        assert await run.texts(customer) == ["答复：你们几点关门？", "会员卡可在前台充值"]


async def test_a_disabled_reply_box_says_why(settings_factory: Any) -> None:
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        customer, servicer = run.sim.customers[0], run.sim.servicers[0]
        await create_staff(run.conninfo, "alice")
        await run.say(customer, "在吗")
        await run.until(lambda: _count(run, customer, 1))
        async with ConsoleClient(run.base_url) as staff:
            await staff.login("alice")
            url = _conversation_url(run, customer)
            await staff.post(f"{url}/takeover")
            assert "disabled" not in _reply_form(html.unescape((await staff.get(url)).text))
            await run.control("take", customer, servicer)  # the event tells wxkf: state 3
            await run.idle()
            form = _reply_form(html.unescape((await staff.get(url)).text))
            assert "disabled" in form
            assert f"会话正由接待人员 {servicer} 在企业微信中接待" in form
            panel = html.unescape((await staff.get(f"{url}/panel")).text)
            assert f"会话正由接待人员 {servicer} 在企业微信中接待" in panel  # what the live page follows


async def test_console_times_are_all_in_the_display_timezone(settings_factory: Any) -> None:
    from zoneinfo import ZoneInfo

    async with running_pipeline(
        settings_factory, ScriptedResponder(), contact_timezone="Asia/Shanghai"
    ) as run:
        customer, servicer = run.sim.customers[0], run.sim.servicers[0]
        await create_staff(run.conninfo, "alice")
        await run.say(customer, "在吗")
        await run.until(lambda: _count(run, customer, 1))
        await run.control("take", customer, servicer)
        await run.control("servicer_reply", customer, servicer, "我是人工客服")
        await run.idle()
        [(paused_until,)] = await run.query("SELECT paused_until FROM kf_conversations")
        shown = paused_until.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%H:%M")
        async with ConsoleClient(run.base_url) as staff:
            await staff.login("alice")
            rows = html.unescape((await staff.get("/console/conversations/rows")).text)
            panel = html.unescape((await staff.get(f"{_conversation_url(run, customer)}/panel")).text)
            listing = html.unescape((await staff.get("/console/conversations")).text)
        for page in (rows, panel):
            assert f"暂停至 {shown}" in page
            assert "UTC" not in page
        assert "Asia/Shanghai" in listing  # the one display timezone, named once on the page
