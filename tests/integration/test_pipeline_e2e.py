"""The pipeline end to end: simulator over real HTTP, the real app, a real procrastinate worker, PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.kf_harness import RunningPipeline, ScriptedResponder, running_pipeline
from wxkf.kf.conversation import RESPONDER_FALLBACK
from wxkf.kf.responder import Conversation, Reply
from wxkf.simulator.callbacks import event_xml


async def test_a_message_is_answered(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer = run.sim.customers[0]
        await run.say(customer, "你好")
        await run.until(lambda: _texts_equal(run, customer, ["答复：你好"]))
        await run.idle()
        assert await run.query("SELECT status FROM kf_inbound") == [("answered",)]
        assert await run.query("SELECT status, attempts FROM kf_outbox") == [("sent", 1)]


async def _texts_equal(run: RunningPipeline, customer: str, expected: list[str]) -> bool:
    return await run.texts(customer) == expected


async def test_a_burst_of_ten_is_recorded_and_answered_together_in_order(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder, kf_debounce_seconds=1.0) as run:
        customer = run.sim.customers[0]
        sent = [f"消息{i}" for i in range(10)]
        for text in sent:
            await run.say(customer, text)
        await run.idle()
        assert await run.query(
            "SELECT count(*), count(*) FILTER (WHERE status = 'answered') FROM kf_inbound"
        ) == [(10, 10)]
        # Every message reached the responder once, in the order the customer wrote them.
        assert [m.text for r in responder.requests for m in r.messages] == sent
        replies = await run.texts(customer)
        assert len(replies) == len(responder.requests)
        assert "".join(replies) == "".join(
            "答复：" + " | ".join(m.text for m in r.messages) for r in responder.requests
        )


async def test_each_callback_delivered_four_times_gets_one_reply(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer = run.sim.customers[0]
        await run.say(customer, "在吗")
        await run.idle()
        [first] = await run.control("callbacks")
        # wecom-api §1.7: WeCom repeats a callback it thinks failed — 4 deliveries of the same one.
        xml = event_xml(run.sim.corp_id, first["open_kfid"], first["token"], 1_800_000_000)
        body, params = run.sim.crypto().callback_envelope(xml)
        async with httpx.AsyncClient(base_url=run.base_url) as http:
            for _ in range(4):
                response = await http.post("/wecom/callback", params=params, content=body)
                assert (response.status_code, response.text) == (200, "success")
        await run.idle()
        assert await run.texts(customer) == ["答复：在吗"]
        assert len(responder.requests) == 1
        assert await run.query("SELECT deliveries FROM kf_callback_events ORDER BY id") == [(1,), (4,)]
        assert await run.query("SELECT count(*) FROM kf_inbound") == [(1,)]


async def test_state_3_with_respect_sends_nothing_and_records_why(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer, servicer = run.sim.customers[0], run.sim.servicers[0]
        await run.say(customer, "第一条")
        await run.idle()
        await run.control("take", customer, servicer)
        await run.say(customer, "第二条")
        await run.idle()
        assert await run.texts(customer) == ["答复：第一条"]
        rows = await run.query("SELECT status, reason FROM kf_inbound WHERE origin = 3 ORDER BY id")
        assert rows == [("answered", None), ("skipped", "human_serving")]
        assert await run.query("SELECT value FROM kf_counters WHERE name = 'kf.skipped.human_serving'") == [
            (1,)
        ]
        assert not [c for c in await run.control("calls", "kf/service_state/trans")]


async def test_state_3_with_end_ends_the_session_with_its_servicer_and_answers_the_next_message(
    settings_factory: Any,
) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder, kf_session_policy="end") as run:
        customer, servicer = run.sim.customers[0], run.sim.servicers[0]
        await run.say(customer, "第一条")
        await run.idle()
        await run.control("take", customer, servicer)
        await run.say(customer, "人工在吗")
        await run.idle()
        [trans] = await run.control("calls", "kf/service_state/trans")
        assert (trans["body"]["service_state"], trans["body"]["servicer_userid"]) == (4, servicer)
        assert (await run.control("session", customer))["service_state"] == 4
        # The closing notice, through the msg_code trans → 4 returned (wecom-api §5: 20 s, one message).
        [notice] = [r for r in await run.received(customer) if r["via"] == "end"]
        assert notice["text"]["content"] == run.app.state.settings.kf_end_text
        await run.say(customer, "再问一次")
        await run.idle()
        assert await run.texts(customer) == ["答复：第一条", "答复：再问一次"]
        reasons = await run.query("SELECT reason FROM kf_inbound WHERE origin = 3 ORDER BY id")
        assert reasons == [(None,), ("ended_for_new_session",), (None,)]


async def test_six_answers_wanted_in_one_window_five_are_sent(settings_factory: Any) -> None:
    long_answer = "这是一个很长的回答中的一句话，用来测试拆分。" * 300  # ≈ 6 messages of 2048 bytes
    responder = ScriptedResponder(answer=lambda request: Reply(text=long_answer))
    async with running_pipeline(settings_factory, responder, kf_closing_hint="请再发消息继续咨询。") as run:
        customer = run.sim.customers[0]
        await run.say(customer, "详细介绍一下")
        await run.idle()
        replies = await run.texts(customer)
        assert len(replies) == 5
        assert all(len(r.encode()) <= 2048 for r in replies)
        assert replies[-1].endswith("请再发消息继续咨询。")
        assert not [c for c in await run.control("calls", "kf/send_msg") if c.get("errcode")]
        assert responder.requests[0].remaining_budget == 5


async def test_push_texts_go_through_the_same_budget(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder, kf_closing_hint="") as run:
        customer = run.sim.customers[0]
        await run.say(customer, "有货了通知我")
        await run.idle()
        pipeline = run.app.state.pipeline
        conversation = Conversation(run.sim.open_kfid, customer)
        texts = [f"通知{i}" for i in range(1, 7)]
        queued = await pipeline.queue_texts(conversation, texts, kind="push", source="restock-1")
        again = await pipeline.queue_texts(conversation, texts, kind="push", source="restock-1")
        await run.idle()
        # One reply + 4 notices = 5 in the window (wecom-api §4); queueing the same source twice sends once.
        assert (len(queued), again) == (4, [])
        assert await run.texts(customer) == ["答复：有货了通知我", "通知1", "通知2", "通知3", "通知4"]


async def test_a_failing_responder_gets_the_customer_a_fallback_and_a_human(settings_factory: Any) -> None:
    def broken(request: Any) -> Reply:
        raise RuntimeError("knowledge base unreachable")

    async with running_pipeline(settings_factory, ScriptedResponder(answer=broken)) as run:
        customer = run.sim.customers[0]
        await run.say(customer, "在吗")
        await run.idle()
        assert await run.texts(customer) == [RESPONDER_FALLBACK]
        # The fallback went out first; then the session was handed to the queue (wecom-api §6, state 2).
        session = await run.control("session", customer)
        assert session["service_state"] == 2
        assert await run.query("SELECT value FROM kf_counters WHERE name = 'kf.responder_error'") == [(1,)]


async def test_a_responder_that_lost_the_database_is_retried_not_handed_to_a_human(
    settings_factory: Any,
) -> None:
    """A database outage is not the responder's fault: the customer gets the answer once it is back,
    not the fallback and a human (a blip would otherwise send customers to the queue for good)."""
    import psycopg

    failures = [psycopg.OperationalError("server closed the connection")]

    def flaky(request: Any) -> Reply:
        if failures:
            raise failures.pop()
        return Reply(text="答复：" + request.messages[0].text)

    async with running_pipeline(settings_factory, ScriptedResponder(answer=flaky)) as run:
        customer = run.sim.customers[0]
        await run.say(customer, "在吗")
        await run.idle()
        assert await run.texts(customer) == ["答复：在吗"]
        assert (await run.control("session", customer))["service_state"] == 1
        assert await run.query("SELECT value FROM kf_counters WHERE name = 'kf.responder_error'") == []


async def test_tokens_revoked_again_and_again_delay_a_reply_but_never_lose_it(settings_factory: Any) -> None:
    """wecom-api §7.4: WeCom may revoke a token early, and under churn the refreshed one may be
    revoked too before it is used. 42001 is never a reason to give up a reply or skip a message."""
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        customer = run.sim.customers[0]
        await run.control("add_fault", "kf/service_state/get", invalidate_token=True, times=4)
        await run.control("add_fault", "kf/send_msg", invalidate_token=True, times=4)
        await run.say(customer, "你好")
        await run.idle()
        assert await run.texts(customer) == ["答复：你好"]
        assert await run.query("SELECT status, reason FROM kf_inbound") == [("answered", None)]
        assert await run.query("SELECT status FROM kf_outbox") == [("sent",)]
