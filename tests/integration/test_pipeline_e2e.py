"""The pipeline end to end: simulator over real HTTP, the real app, a real procrastinate worker, PostgreSQL."""

from __future__ import annotations

from typing import Any

from tests.integration.kf_harness import RunningPipeline, ScriptedResponder, running_pipeline


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
