"""kill -9 of the worker process mid-burst: after a restart every message is answered exactly once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from tests.acceptance.processes import start_wxkf, wxkf_env
from tests.integration.kf_harness import ScriptedResponder, running_pipeline
from wxkf.agent.fake_openai import FakeOpenAI

WORKER = ["worker", "--stalled-after", "2"]


async def test_kill_9_of_the_worker_mid_burst_loses_nothing_and_repeats_nothing(
    settings_factory: Any, tmp_path: Path
) -> None:
    # The web process runs here (no worker); the worker is a separate process we kill. It answers with
    # the agent's LLM responder against the local fake (which echoes), so no answer hands a customer over.
    with FakeOpenAI(api_key="sk-crash-test") as llm:
        await _kill_and_restart(settings_factory, tmp_path, llm)


async def _kill_and_restart(settings_factory: Any, tmp_path: Path, llm: FakeOpenAI) -> None:
    async with running_pipeline(settings_factory, ScriptedResponder(), run_worker=False) as run:
        env = wxkf_env(
            run.conninfo, run.sim, tmp_path / "var", LLM_BASE_URL=llm.base_url, LLM_API_KEY="sk-crash-test"
        )
        log = tmp_path / "worker.log"
        # Slow sends, so the kill lands while messages are being answered and sent.
        await run.control("add_fault", "kf/send_msg", delay_ms=150)
        worker = start_wxkf(WORKER, env, log)
        try:
            customers = run.sim.customers
            for i in range(6):
                await run.say(customers[i % len(customers)], f"问题{i}")

            async def answering() -> bool:
                return bool(await run.query("SELECT 1 FROM kf_outbox LIMIT 1"))

            await run.until(answering, timeout=60)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            # The burst goes on while no worker runs; callbacks are still recorded by the web process.
            for i in range(6, 12):
                await run.say(customers[i % len(customers)], f"问题{i}")
            await run.control("wait_callbacks")
            pending = await run.query(
                "SELECT (SELECT count(*) FROM kf_outbox WHERE status = 'pending'),"
                " (SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing')"
            )
            assert pending[0] != (0, 0), "the kill came too late to test anything"

            worker = start_wxkf(WORKER, env, log)
            await run.idle(timeout=90)  # a fresh process: start, recovery after --stalled-after, 12 answers
        finally:
            worker.send_signal(signal.SIGTERM)
            await asyncio.to_thread(worker.wait, 30)

        assert await run.query("SELECT DISTINCT status FROM kf_inbound") == [("answered",)]
        assert await run.query("SELECT DISTINCT status FROM kf_outbox") == [("sent",)]
        outbox = await run.query("SELECT external_userid, msgid FROM kf_outbox ORDER BY id")
        received: list[tuple[str, str]] = []
        for customer in customers:
            received += [
                (customer, r["msgid"]) for r in await run.received(customer) if r["via"] == "send_msg"
            ]
        # Every reply reached the customer, none twice.
        assert sorted(received) == sorted(outbox)
        assert len(set(received)) == len(received)
        # Each of the 12 questions reached a responder exactly once.
        texts = [t for _, t in await run.query("SELECT msgid, body->'body'->>'content' FROM kf_inbound")]
        assert sorted(texts) == sorted(f"问题{i}" for i in range(12))
