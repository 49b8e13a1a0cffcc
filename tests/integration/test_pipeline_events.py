"""Events and servicers through the whole pipeline (wecom-api §3 event table, §5 welcome)."""

from __future__ import annotations

from typing import Any

from tests.integration.kf_harness import ScriptedResponder, running_pipeline


async def test_enter_session_gets_the_welcome_through_send_msg_on_event(settings_factory: Any) -> None:
    async with running_pipeline(settings_factory, ScriptedResponder(), kf_welcome_text="欢迎光临") as run:
        customer = run.sim.customers[0]
        event = await run.control("enter", customer)
        assert event["event"]["welcome_code"]
        await run.idle()
        assert await run.texts(customer, via="welcome") == ["欢迎光临"]
        # wecom-api §5: the welcome has its own quota; the 5-message budget is untouched.
        assert await run.query("SELECT kind, status FROM kf_outbox") == [("welcome", "sent")]
        assert await run.query("SELECT count(*) FROM kf_conversations WHERE replies_used > 0") == [(0,)]


async def test_a_servicer_message_pauses_the_bot_for_that_customer(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer, other, servicer = run.sim.customers[0], run.sim.customers[1], run.sim.servicers[0]
        await run.say(customer, "你好")
        await run.idle()
        await run.control("servicer_reply", customer, servicer, "我是人工客服")
        await run.idle()
        await run.control("set_state", customer, 1)  # the servicer hands back; only the pause holds the bot
        await run.say(customer, "还在吗")
        await run.say(other, "你好")
        await run.idle()
        assert await run.texts(customer) == ["答复：你好"]
        assert await run.texts(other) == ["答复：你好"]
        reasons = await run.query(
            "SELECT reason FROM kf_inbound WHERE external_userid = %s AND origin = 3 ORDER BY id", customer
        )
        assert reasons == [(None,), ("paused",)]


async def test_a_recalled_message_is_not_answered(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder, kf_debounce_seconds=2.0) as run:
        customer = run.sim.customers[0]
        kept = await run.say(customer, "第一条")
        recalled = await run.say(customer, "发错了")
        await run.control("recall", customer, recalled["msgid"])
        await run.idle()
        assert await run.texts(customer) == ["答复：第一条"]
        statuses = await run.query("SELECT msgid, status FROM kf_inbound WHERE origin = 3 ORDER BY id")
        assert statuses == [(kept["msgid"], "answered"), (recalled["msgid"], "recalled")]


async def test_msg_send_fail_marks_the_outbox_row_failed_with_the_reason(settings_factory: Any) -> None:
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        customer = run.sim.customers[0]
        await run.say(customer, "你好")
        await run.idle()
        [(msgid,)] = await run.query("SELECT msgid FROM kf_outbox")
        await run.control("fail_message", customer, msgid, 10)
        await run.idle()
        [(status, fail_type, error)] = await run.query("SELECT status, fail_type, error FROM kf_outbox")
        assert (status, fail_type) == ("failed", 10)
        assert "用户拒收" in error
        assert await run.query("SELECT value FROM kf_counters WHERE name = 'kf.send_fail.10'") == [(1,)]


async def test_non_text_messages_reach_the_responder_as_structured_content(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer = run.sim.customers[0]
        location = {"latitude": 31.2, "longitude": 121.4, "name": "人民广场", "address": "上海市"}
        await run.control("send", customer, "location", location)
        await run.idle()
        [message] = responder.requests[0].messages
        assert message.msgtype == "location"
        assert message.content["name"] == "人民广场"
        assert message.text.startswith("[位置 location] 人民广场")


async def test_a_sync_msg_error_is_explained_counted_and_recovered_from(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer = run.sim.customers[0]
        # 60020: the server's IP is not in 企业可信IP — retrying cannot help until the admin fixes it.
        await run.control("add_fault", "kf/sync_msg", errcode=60020, times=1)
        await run.say(customer, "第一条")
        await run.idle()
        assert await run.texts(customer) == []
        assert await run.query("SELECT value FROM kf_counters WHERE name = 'kf.errcode.60020'") == [(1,)]
        # Fixed: the next callback syncs both messages; nothing was lost.
        await run.say(customer, "第二条")
        await run.idle()
        assert [m.text for r in responder.requests for m in r.messages] == ["第一条", "第二条"]


async def test_a_message_right_after_the_servicer_ends_the_session_is_answered(
    settings_factory: Any,
) -> None:
    """wecom-api §6: a customer message after state 4 opens a new session (issue 12, defect 3).

    The end event and the message reach one conversation job together; the state the event tells
    (4, as of the event) must not be applied to the message written after it.
    """
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer, servicer = run.sim.customers[0], run.sim.servicers[0]
        await run.say(customer, "你好")
        await run.idle()
        await run.control("take", customer, servicer)
        await run.idle()
        # Both happen before wxkf syncs: one sync page, one conversation job, the event first.
        await run.control("set_callback_url", None)
        await run.control("end", customer)
        await run.say(customer, "我又回来了")
        await run.control("set_callback_url", f"{run.base_url}/wecom/callback")
        await run.control("set_servicer_status", servicer, 0)  # any callback makes wxkf sync
        await run.idle()
        assert await run.texts(customer) == ["答复：你好", "答复：我又回来了"]
        reasons = await run.query("SELECT status, reason FROM kf_inbound WHERE origin = 3 ORDER BY id")
        assert reasons == [("answered", None), ("answered", None)]


async def test_the_servicer_pause_ends_with_the_servicer_session(settings_factory: Any) -> None:
    """The pause a servicer's message sets belongs to that session: once it ends (state 4), the
    customer's next message opens a new session (wecom-api §6) and reaches the bot at once."""
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer, servicer = run.sim.customers[0], run.sim.servicers[0]
        await run.say(customer, "你们几点关门？")
        await run.idle()
        await run.control("take", customer, servicer)
        await run.control("servicer_reply", customer, servicer, "您好，我们晚上21点关门")
        await run.idle()
        await run.say(customer, "好的")  # the servicer's session is still on: the pause holds
        await run.idle()
        await run.control("end", customer)
        await run.idle()
        await run.say(customer, "那会员卡怎么充值？")
        await run.idle()
        assert (await run.control("session", customer))[
            "service_state"
        ] == 1  # a new session, the bot serving
        assert await run.texts(customer) == ["答复：你们几点关门？", "答复：那会员卡怎么充值？"]
        reasons = await run.query(
            "SELECT status, reason FROM kf_inbound WHERE external_userid = %s AND origin = 3 ORDER BY id",
            customer,
        )
        assert reasons == [("answered", None), ("skipped", "paused"), ("answered", None)]
        assert await run.query("SELECT paused_until FROM kf_conversations") == [(None,)]


async def test_the_servicer_pause_ends_when_the_end_and_the_next_message_come_in_one_sync(
    settings_factory: Any,
) -> None:
    """The servicer's message, the end event and the customer's new message in one conversation job."""
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        customer, servicer = run.sim.customers[0], run.sim.servicers[0]
        await run.say(customer, "你们几点关门？")
        await run.idle()
        await run.control("set_callback_url", None)
        await run.control("take", customer, servicer)
        await run.control("servicer_reply", customer, servicer, "您好，我们晚上21点关门")
        await run.control("end", customer)
        await run.say(customer, "那会员卡怎么充值？")
        await run.control("set_callback_url", f"{run.base_url}/wecom/callback")
        await run.control("set_servicer_status", servicer, 0)  # any callback makes wxkf sync
        await run.idle()
        assert await run.texts(customer) == ["答复：你们几点关门？", "答复：那会员卡怎么充值？"]
