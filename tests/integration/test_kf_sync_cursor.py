"""A sync cursor WeCom refuses does not stop the account: wxkf syncs from the start once and answers what is new."""

from __future__ import annotations

from typing import Any

from tests.integration.kf_harness import ScriptedResponder, running_pipeline
from wxkf.kf import recovery


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


async def test_an_account_wecom_says_does_not_exist_is_not_swept_again_until_it_calls_back(
    settings_factory: Any,
) -> None:
    """One signed callback for an open_kfid WeCom does not know (95004) made the sweep sync it every
    KF_SYNC_SWEEP_SECONDS for good, a warning each time; now only a new callback tries it again."""
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        pipeline = run.app.state.pipeline
        await run.query(
            "INSERT INTO kf_callback_events (open_kfid, token, create_time, known_account)"
            " VALUES ('wkGONE', 't1', 1, true) RETURNING id"
        )
        assert await recovery.SyncSweep(0.001).run(pipeline) == 1
        await run.until(lambda: _gone_refused(run, 1))
        await run.idle()
        assert await run.query("SELECT errcode FROM kf_sync_refusals WHERE open_kfid = 'wkGONE'") == [
            (95004,)
        ]

        # Every later pass (a new sweep: no memory of the last deferral) leaves it alone.
        assert await recovery.SyncSweep(0.001).run(pipeline) == 0

        # A new callback for it: tried again.
        await run.query(
            "INSERT INTO kf_callback_events (open_kfid, token, create_time, known_account)"
            " VALUES ('wkGONE', 't2', 2, true) RETURNING id"
        )
        assert await recovery.SyncSweep(0.001).run(pipeline) == 1
        await run.until(lambda: _gone_refused(run, 2))


async def _gone_refused(run: Any, n: int) -> bool:
    calls: list[dict[str, Any]] = await run.control("calls", "kf/sync_msg")
    return len([c for c in calls if c["errcode"] == 95004]) >= n


async def test_an_account_that_answers_again_loses_its_refusal(settings_factory: Any) -> None:
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        customer = run.sim.customers[0]
        kfid = run.sim.open_kfid
        await run.query(
            "INSERT INTO kf_sync_refusals (open_kfid, errcode) VALUES (%s, 95004) RETURNING 1", kfid
        )
        await run.say(customer, "还在吗")
        await run.until(lambda: _texts(run, customer, ["答复：还在吗"]))
        assert await run.query("SELECT * FROM kf_sync_refusals") == []
