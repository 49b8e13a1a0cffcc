"""A sync cursor WeCom refuses (40058 'cursor') is dropped and the account synced again from the start.

Simulator over HTTP, the real app and worker, PostgreSQL: the stored cursor goes stale the way it
does after `/sim/reset` or when WeCom drops old cursors, and the customer must still be answered.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.integration.kf_harness import RunningPipeline, ScriptedResponder, running_pipeline


async def test_a_refused_cursor_is_reset_and_nothing_is_answered_twice(
    settings_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        customer = run.sim.customers[0]
        await run.say(customer, "第一条")
        await run.until(lambda: _texts(run, customer, ["答复：第一条"]))
        await run.idle()
        [(stale,)] = await run.query("SELECT cursor FROM kf_sync_cursors")

        await run.control("invalidate_cursors")
        with caplog.at_level(logging.WARNING, logger="wxkf.kf.sync"):
            await run.say(customer, "第二条")
            await run.until(lambda: _texts(run, customer, ["答复：第一条", "答复：第二条"]))
            await run.idle()

        # Answered exactly once each: the resync read 第一条 again, the ledger already had it.
        assert await run.texts(customer) == ["答复：第一条", "答复：第二条"]
        assert [m.text for r in responder.requests for m in r.messages] == ["第一条", "第二条"]
        assert await run.query("SELECT status, count(*) FROM kf_inbound GROUP BY status") == [("answered", 2)]
        [(fresh,)] = await run.query("SELECT cursor FROM kf_sync_cursors")
        assert fresh
        assert fresh != stale
        assert await run.query("SELECT value FROM kf_counters WHERE name = 'kf.sync.cursor_reset'") == [(1,)]
        warnings = [r.getMessage() for r in caplog.records if r.name == "wxkf.kf.sync"]
        assert len(warnings) == 1
        assert warnings[0].startswith("企业微信拒绝了保存的同步游标")


async def _texts(run: RunningPipeline, customer: str, expected: list[str]) -> bool:
    return await run.texts(customer) == expected
