"""What the bot does when the knowledge base is silent, end to end against the simulator.

`KF_UNKNOWN_ANSWER=say` keeps the customer and says how to reach a person; `handoff` hands over only to
someone who can receive (kf/servicer/list), with the queue notice through trans's msg_code and an app
message to the servicers; a queue nobody takes is ended after KF_QUEUE_TIMEOUT_MINUTES (wecom-api §5, §6, §8).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.kf_harness import RunningPipeline, running_pipeline
from wxkf.agent.kb import HashingEmbedder, KnowledgeBase
from wxkf.agent.prompts import HANDOFF_TEXT, NO_HUMAN_TEXT, TRANSFER_TEXT, UNKNOWN_TEXT
from wxkf.agent.responder import OfflineResponder, UnknownAnswer
from wxkf.db.engine import Database

FAQ = "# 小店\n## 发票\n电子发票在确认收货后申请，24 小时内发到邮箱。\n## 门店\n杭州门店每天十点营业。\n"
OFF_TOPIC = "帮我写一首关于秋天的诗"


async def offline(database: Database, tmp_path: Path, unknown_answer: UnknownAnswer) -> OfflineResponder:
    path = tmp_path / "faq.md"
    path.write_text(FAQ, encoding="utf-8")
    kb = KnowledgeBase(database, HashingEmbedder())
    await kb.add_documents([path])
    return OfflineResponder(kb, unknown_answer=unknown_answer)


async def texts(run: RunningPipeline, customer: str) -> list[tuple[str, str]]:
    """What the customer received: (how, text), in order."""
    return [(r["via"], r["text"]["content"]) for r in await run.received(customer) if "text" in r]


async def off_duty(run: RunningPipeline) -> None:
    for servicer in run.sim.servicers:
        await run.control("set_servicer_status", servicer, 1)


async def test_say_tells_the_customer_it_does_not_know_and_keeps_them(
    settings_factory: Any, database: Database, tmp_path: Path
) -> None:
    responder = await offline(database, tmp_path, "say")
    async with running_pipeline(settings_factory, responder) as run:
        customer = run.sim.customers[0]
        await run.say(customer, OFF_TOPIC)
        await run.idle()
        await run.say(customer, "电子发票多久发到邮箱")
        await run.idle()
        received = await texts(run, customer)
        assert received[0] == ("send_msg", UNKNOWN_TEXT)
        assert "24 小时内发到邮箱" in received[1][1]
        assert not await run.control("calls", "kf/service_state/trans")
        assert (await run.control("session", customer))["service_state"] == 1


async def test_handoff_reaches_a_servicer_on_duty_with_the_queue_notice_and_an_app_message(
    settings_factory: Any, database: Database, tmp_path: Path
) -> None:
    responder = await offline(database, tmp_path, "handoff")
    async with running_pipeline(settings_factory, responder, kf_queue_timeout_minutes=0) as run:
        customer = run.sim.customers[0]
        await run.say(customer, OFF_TOPIC)
        await run.idle()
        queue_text = run.app.state.settings.kf_queue_text
        assert await texts(run, customer) == [("send_msg", HANDOFF_TEXT), ("pool", queue_text)]
        assert (await run.control("session", customer))["service_state"] == 2
        for servicer in run.sim.servicers:
            [alert] = await run.control("app_messages", servicer)
            assert OFF_TOPIC in alert["text"]["content"]
            assert customer in alert["text"]["content"]
        rows = await run.query("SELECT to_state, question, notified, closed_at FROM kf_handoffs")
        assert rows == [(2, OFF_TOPIC, list(run.sim.servicers), None)]


async def test_handoff_with_nobody_on_duty_keeps_the_customer_with_the_bot(
    settings_factory: Any, database: Database, tmp_path: Path
) -> None:
    responder = await offline(database, tmp_path, "handoff")
    async with running_pipeline(settings_factory, responder) as run:
        await off_duty(run)
        customer = run.sim.customers[0]
        await run.say(customer, OFF_TOPIC)
        await run.idle()
        await run.say(customer, "转人工")
        await run.idle()
        await run.say(customer, "杭州门店几点开门")
        await run.idle()
        received = await texts(run, customer)
        assert received[:2] == [("send_msg", UNKNOWN_TEXT), ("send_msg", NO_HUMAN_TEXT)]
        assert "十点营业" in received[2][1]  # still the bot's customer, never stranded in the queue
        assert not await run.control("calls", "kf/service_state/trans")
        counted = await run.query("SELECT value FROM kf_counters WHERE name = 'kf.handoff.unattended'")
        assert counted == [(2,)]


async def test_a_queue_nobody_takes_ends_with_a_message_and_the_next_message_reaches_the_bot(
    settings_factory: Any, database: Database, tmp_path: Path
) -> None:
    responder = await offline(database, tmp_path, "handoff")
    async with running_pipeline(settings_factory, responder, kf_queue_timeout_minutes=0.02) as run:
        customer = run.sim.customers[0]
        await run.say(customer, "转人工")

        async def ended() -> bool:
            return bool((await run.control("session", customer))["service_state"] == 4)

        await run.until(ended)
        await run.idle()
        timeout_text = run.app.state.settings.kf_queue_timeout_text
        assert (await texts(run, customer))[-1] == ("end", timeout_text)
        assert await run.query("SELECT outcome FROM kf_handoffs") == [("timed_out",)]
        moves = [c["body"]["service_state"] for c in await run.control("calls", "kf/service_state/trans")]
        assert moves == [2, 4]
        await run.say(customer, "电子发票多久发到邮箱")
        await run.idle()
        assert "24 小时内发到邮箱" in (await texts(run, customer))[-1][1]
        assert (await texts(run, customer))[0] == ("send_msg", TRANSFER_TEXT)


async def test_a_queue_a_servicer_took_is_left_alone(
    settings_factory: Any, database: Database, tmp_path: Path
) -> None:
    responder = await offline(database, tmp_path, "handoff")
    async with running_pipeline(settings_factory, responder, kf_queue_timeout_minutes=0.05) as run:
        customer, servicer = run.sim.customers[0], run.sim.servicers[0]
        await run.say(customer, "转人工")

        async def queued() -> bool:
            return bool((await run.control("session", customer))["service_state"] == 2)

        await run.until(queued)
        await run.control("take", customer, servicer)

        async def closed() -> bool:
            return bool(await run.query("SELECT 1 FROM kf_handoffs WHERE outcome = 'served'"))

        await run.until(closed)
        assert (await run.control("session", customer))["service_state"] == 3
