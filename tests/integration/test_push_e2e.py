"""Push end to end against the simulator: match → eligibility in the budget's transaction → outbox → WeCom."""

from __future__ import annotations

from typing import Any

from tests.integration.push_harness import PushRun, at_local_hour, push_pipeline


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
