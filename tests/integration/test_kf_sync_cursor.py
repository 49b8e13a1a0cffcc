"""A sync cursor WeCom refuses does not stop the account: wxkf syncs from the start once and answers what is new."""

from __future__ import annotations

from typing import Any

from tests.integration.kf_harness import ScriptedResponder, running_pipeline


async def test_a_refused_cursor_is_dropped_and_the_next_message_answered_once(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer = run.sim.customers[0]
        await run.say(customer, "第一条")
        await run.until(lambda: _texts(run, customer, ["答复：第一条"]))
        await run.idle()
        [(stored,)] = await run.query("SELECT cursor FROM kf_sync_cursors")
        assert stored

        await run.control("invalidate_cursors")
        await run.say(customer, "第二条")
        await run.until(lambda: _texts(run, customer, ["答复：第一条", "答复：第二条"]))
        await run.idle()

        # The first message came back with the history and was not answered again.
        assert [m.text for r in responder.requests for m in r.messages] == ["第一条", "第二条"]
        assert await run.query("SELECT status, count(*) FROM kf_inbound GROUP BY status") == [("answered", 2)]
        assert await run.query("SELECT value FROM kf_counters WHERE name = 'kf.sync.cursor_reset'") == [(1,)]
        [(renewed,)] = await run.query("SELECT cursor FROM kf_sync_cursors")
        assert renewed
        assert renewed != stored


async def test_an_account_whose_every_sync_is_refused_does_not_loop(settings_factory: Any) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer = run.sim.customers[0]
        await run.say(customer, "第一条")
        await run.until(lambda: _texts(run, customer, ["答复：第一条"]))
        await run.idle()
        before = len(await run.control("calls", "kf/sync_msg"))
        await run.control("add_fault", "kf/sync_msg", errcode=40058, times=2)
        await run.say(customer, "第二条")
        await run.until(lambda: _refused(run, before, 2))
        await run.idle()
        # The refused cursor, then the refused sync from the start: the run gives up (no loop), once.
        assert len(await _refusals(run, before)) == 2
        assert await run.query("SELECT value FROM kf_counters WHERE name = 'kf.sync.cursor_reset'") == [(1,)]
        # The next callback syncs again and both messages are answered, each once.
        await run.say(customer, "第三条")
        await run.until(lambda: _texts(run, customer, ["答复：第一条", "答复：第二条 | 第三条"]))
        await run.idle()
        assert len(await _refusals(run, before)) == 2
        assert await run.query("SELECT status, count(*) FROM kf_inbound GROUP BY status") == [("answered", 3)]


async def _refusals(run: Any, before: int) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = await run.control("calls", "kf/sync_msg")
    return [c for c in calls[before:] if c["errcode"] == 40058]


async def _refused(run: Any, before: int, n: int) -> bool:
    return len(await _refusals(run, before)) >= n


async def _texts(run: Any, customer: str, expected: list[str]) -> bool:
    return bool(await run.texts(customer) == expected)
