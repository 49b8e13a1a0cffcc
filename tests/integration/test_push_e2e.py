"""Push end to end against the simulator: match → eligibility in the budget's transaction → outbox → WeCom."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg

from tests.integration.kf_harness import ScriptedResponder
from tests.integration.push_harness import PushRun, at_local_hour, push_pipeline
from wxkf.kf.responder import Reply, ReplyRequest
from wxkf.push.models import PreferencesPatch
from wxkf.push.templates import MiniProgramTemplate


async def _open_window(run: PushRun, customer: str, text: str = "你好") -> None:
    await run.run.say(customer, text)
    await run.run.idle()


async def test_a_new_profile_is_matched_and_pushed_inside_the_window(settings_factory: Any) -> None:
    async with push_pipeline(settings_factory) as run:
        customer = run.sim.customers[0]
        await at_local_hour(run, 10)
        await _open_window(run, customer)
        await run.intent(customer)
        await run.run.idle()
        assert await run.pushes(customer) == []  # no profile yet
        await run.profile("张三")
        await run.run.until(lambda: _count(run, customer, 1))
        [text] = await run.push_texts(customer)
        assert "【张三】符合您的意图【寻找AI合作伙伴】" in text
        assert "符合「城市 = 北京」" in text
        assert "关键词「AI」「创业」" in text
        assert "回复「查看1」了解详情" in text
        await run.run.idle()
        assert await run.history(customer) == [("sent", None)]


async def _count(run: PushRun, customer: str, n: int) -> bool:
    return len(await run.pushes(customer)) >= n


async def test_during_quiet_hours_the_push_waits_until_they_end(settings_factory: Any) -> None:
    async with push_pipeline(settings_factory) as run:
        customer = run.sim.customers[0]
        night = await at_local_hour(run, 23, 30)  # quiet hours 22:00-08:00 (PUSH_QUIET_HOURS)
        await _open_window(run, customer)
        await run.intent(customer)
        await run.profile()
        await run.run.until(lambda: _history_is(run, customer, [("scheduled", "quiet_hours")]))
        [match] = await run.push.list_matches(owner=run.owner(customer))
        assert match.status == "scheduled"
        assert match.due_at is not None
        assert (match.due_at - night).total_seconds() == 8.5 * 3600
        await run.advance(8.5 * 3600 - 60)  # 07:59: still quiet
        await run.run.idle()
        assert await run.pushes(customer) == []
        await run.advance(60)  # 08:00: the tick delivers it
        await run.run.until(lambda: _count(run, customer, 1))
        await run.run.idle()
        assert await run.history(customer) == [("scheduled", "quiet_hours"), ("sent", None)]


async def test_a_closed_window_sends_nothing_and_records_why(settings_factory: Any) -> None:
    async with push_pipeline(settings_factory) as run:
        customer = run.sim.customers[0]
        await at_local_hour(run, 10)
        await _open_window(run, customer)
        await run.advance(48 * 3600 + 60)  # wecom-api §4: 48 h after the customer's last message
        await run.intent(customer)
        await run.profile()
        await run.run.until(lambda: _history_is(run, customer, [("dropped", "window_closed")]))
        await run.run.idle()
        assert await run.pushes(customer) == []
        [entry] = await run.push.history(owner=run.owner(customer))
        assert entry.explanation is not None
        assert "48 小时" in entry.explanation


async def test_by_default_a_push_leaves_the_windows_last_message_to_the_customer(
    settings_factory: Any,
) -> None:
    async with push_pipeline(settings_factory) as run:
        customer = run.sim.customers[0]
        await at_local_hour(run, 10)
        await _open_window(run, customer)  # the bot's answer: 4 of 5 left
        await _use_budget(run, customer, used=4)
        await run.intent(customer)
        await run.profile()
        await run.run.until(lambda: _history_is(run, customer, [("dropped", "last_message_kept")]))
        assert await run.pushes(customer) == []


async def _use_budget(run: PushRun, customer: str, used: int) -> None:
    await run.run.query(
        "UPDATE kf_conversations SET replies_used = %s WHERE open_kfid = %s AND external_userid = %s RETURNING 1",
        used,
        run.sim.open_kfid,
        customer,
    )


async def _history_is(run: PushRun, customer: str, expected: list[tuple[str, str | None]]) -> bool:
    return await run.history(customer) == expected


@dataclass
class GatedResponder:
    """Answers "最后一个问题" only once `gate` is set, so a test can line up a race."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[ReplyRequest] = field(default_factory=list)

    async def respond(self, request: ReplyRequest) -> Reply:
        self.requests.append(request)
        if request.messages[-1].text == "最后一个问题":
            self.started.set()
            await self.gate.wait()
            return Reply(text="AI 的回答")
        return Reply(text="答复：" + request.messages[-1].text)


async def test_a_push_and_an_ai_reply_racing_for_the_last_message_send_exactly_one(
    settings_factory: Any,
) -> None:
    responder = GatedResponder()
    async with push_pipeline(settings_factory, responder, push_keep_for_replies=0) as run:
        customer = run.sim.customers[0]
        await at_local_hour(run, 10)
        await _open_window(run, customer)
        await run.intent(customer)
        await run.run.say(customer, "最后一个问题")  # a fresh window: 5 messages
        await asyncio.wait_for(responder.started.wait(), 20)
        blocker = await psycopg.AsyncConnection.connect(run.run.conninfo)
        async with blocker, blocker.transaction():
            # Hold the budget's row, spend 4 of 5, then let both senders reach the lock together.
            await blocker.execute(
                "UPDATE kf_conversations SET replies_used = 4 WHERE open_kfid = %s AND external_userid = %s",
                (run.sim.open_kfid, customer),
            )
            responder.gate.set()
            await run.profile()
            await run.run.until(lambda: _waiting_on_locks(run, 2))
        await run.run.idle()
        sent = [r for r in await run.run.received(customer) if r.get("via") == "send_msg"]
        assert [r["text"]["content"] for r in sent[:1]] == ["答复：你好"]
        last = sent[1:]
        assert len(last) == 1  # the AI reply or the push, never both
        history = await run.history(customer)
        if last[0]["msgid"].startswith("p"):
            assert history == [("sent", None)]
        else:
            assert last[0]["text"]["content"] == "AI 的回答"
            assert history == [("dropped", "budget_used_up")]
        session = await run.run.control("session", customer)
        assert session["budget_left"] == 4  # the simulator saw one send in this window, as the ledger did


async def _waiting_on_locks(run: PushRun, n: int) -> bool:
    rows = await run.run.query(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    return bool(rows[0][0] >= n)


async def test_the_daily_limit_holds_and_the_rest_goes_the_next_morning(settings_factory: Any) -> None:
    async with push_pipeline(settings_factory) as run:
        customer = run.sim.customers[0]
        morning = await at_local_hour(run, 10)
        await _open_window(run, customer)
        await run.push.set_preferences(run.owner(customer), PreferencesPatch(daily_limit=1))
        await run.intent(customer, max_pushes_per_day=5)
        await run.profile("张三")
        await run.run.until(lambda: _count(run, customer, 1))
        await run.profile("李四", company="深瞳智能")
        await run.run.until(
            lambda: _history_is(run, customer, [("sent", None), ("scheduled", "daily_limit")])
        )
        # Tomorrow, but not at midnight: the first moment past the limit *and* the quiet hours is 08:00.
        held = [m for m in await run.push.list_matches(owner=run.owner(customer)) if m.status == "scheduled"]
        assert [m.due_at for m in held] == [morning + timedelta(hours=22)]
        await run.advance(22 * 3600 - 60)  # 07:59 the next day
        await run.run.idle()
        assert len(await run.pushes(customer)) == 1
        await run.advance(60)
        await run.run.until(lambda: _count(run, customer, 2))
        assert await run.history(customer) == [("sent", None), ("scheduled", "daily_limit"), ("sent", None)]
        texts = await run.push_texts(customer)
        assert "【张三】" in texts[0]
        assert "【李四】" in texts[1]
        assert "回复「查看2」" in texts[1]


# A PNG's signature and a few bytes: the simulator, like WeCom, takes JPG and PNG only (wecom-api §8).
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


async def test_a_mini_program_card_arrives_with_a_thumb_renewed_before_it_expires(
    settings_factory: Any,
) -> None:
    async with push_pipeline(settings_factory) as run:
        customer = run.sim.customers[0]
        await at_local_hour(run, 16)  # 66 hours later it is 10:00, outside the quiet hours
        await _open_window(run, customer)
        card = MiniProgramTemplate(
            appid="wx8bd80126147dfAAA",
            pagepath="pages/match/index?no={match_id}",
            title="{profile_name} 符合【{intent_name}】",
            thumb=await run.push.save_thumb(PNG, "cover.png"),
        )
        await run.push.save_template("card", card)
        await run.intent(customer, template="card")
        await run.profile("张三")
        await run.run.until(lambda: _count(run, customer, 1))
        [first] = await run.pushes(customer)
        assert first["msgtype"] == "miniprogram"
        assert first["miniprogram"]["title"] == "张三 符合【寻找AI合作伙伴】"
        assert first["miniprogram"]["pagepath"] == "pages/match/index?no=1"
        # Delivered means the simulator accepted the thumb: known, an image, not expired (wecom-api §4, §8).
        assert len(await run.run.control("calls", "media/upload")) == 1
        # 3 days less 6 hours later the upload has less than MEDIA_REFRESH_MARGIN_HOURS (12) left: renewed.
        await run.advance(3 * 86400 - 6 * 3600)
        await _open_window(run, customer, "又来了")
        await run.profile("王五", company="云帆科技")
        await run.run.until(lambda: _count(run, customer, 2))
        second = (await run.pushes(customer))[1]
        assert len(await run.run.control("calls", "media/upload")) == 2
        assert second["miniprogram"]["thumb_media_id"] != first["miniprogram"]["thumb_media_id"]


async def test_view_shows_the_details_and_unsubscribe_stops_the_pushes(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with push_pipeline(settings_factory, responder) as run:
        customer = run.sim.customers[0]
        await at_local_hour(run, 10)
        await _open_window(run, customer)
        await run.intent(customer)
        await run.profile("张三")
        await run.run.until(lambda: _count(run, customer, 1))
        await run.run.idle()
        await run.run.say(customer, "查看1")
        await run.run.until(lambda: _replied(run, customer, "📇 编号 1：张三"))
        details = (await run.run.texts(customer))[-1]
        assert "公司：智元科技" in details
        assert "匹配「寻找AI合作伙伴」" in details
        assert [m.text for r in responder.requests for m in r.messages] == [
            "你好"
        ]  # never reached the responder
        [match] = await run.push.list_matches(owner=run.owner(customer))
        assert match.feedback == "viewed"
        await run.run.say(customer, "退订")
        await run.run.until(lambda: _replied(run, customer, "已为您关闭匹配推送"))
        await run.profile("李四", company="深瞳智能")
        await run.run.until(lambda: _history_is(run, customer, [("sent", None), ("skipped", "disabled")]))
        await run.run.idle()
        assert len(await run.pushes(customer)) == 1


async def _replied(run: PushRun, customer: str, start: str) -> bool:
    texts = await run.run.texts(customer)
    return bool(texts) and texts[-1].startswith(start)


async def test_the_daily_digest_sends_what_waited_once_the_customer_is_back(settings_factory: Any) -> None:
    async with push_pipeline(settings_factory) as run:
        customer = run.sim.customers[0]
        await at_local_hour(run, 10)
        await _open_window(run, customer)
        await _use_budget(run, customer, used=4)  # the window's last message is the customer's
        await run.intent(customer)
        await run.profile()
        await run.run.until(lambda: _history_is(run, customer, [("dropped", "last_message_kept")]))
        await at_local_hour(run, 8, 30)  # the next morning the customer writes again: a new window
        await _open_window(run, customer, "早上好")
        assert await run.pushes(customer) == []  # nothing is pushed on the back of an answer
        await at_local_hour(run, 9)  # PUSH_DIGEST_HOUR
        assert await run.push.digest() == 1  # what the hourly push:digest job does
        await run.run.until(lambda: _count(run, customer, 1))
        assert "【张三】" in (await run.push_texts(customer))[0]
        periodic = {
            p.task.name: p.cron
            for p in run.push.pipeline.procrastinate.periodic_registry.periodic_tasks.values()
        }
        assert {k: v for k, v in periodic.items() if k.startswith("push:")} == {
            "push:tick": "* * * * * *",
            "push:digest": "0 * * * *",
        }
