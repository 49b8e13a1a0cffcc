"""`wxkf worker` rides out a PostgreSQL outage: it waits with backoff and answers again on its own."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import procrastinate
import psycopg

from tests.acceptance.processes import PrivatePostgres, start_wxkf, wxkf_env
from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.kf import jobs
from wxkf.simulator.testing import SimulatorHandle, run_simulator


async def _ask(sim: SimulatorHandle, conninfo: str, text: str) -> None:
    """The customer writes; the sync is deferred as the callback route would (no web process here)."""
    await asyncio.to_thread(sim.control.send_text, sim.customers[0], text)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    jobs.register_tasks(app)
    async with app.open_async():
        await jobs.defer_sync(app, sim.open_kfid)


async def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.1)


def _replies(sim: SimulatorHandle) -> list[str]:
    return [r["text"]["content"] for r in sim.control.received(sim.customers[0]) if r["via"] == "send_msg"]


def _beating(conninfo: str) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - interval '2 s'"
            ).fetchone()
    except psycopg.OperationalError:
        return False
    return bool(row and row[0])


async def test_the_worker_survives_a_database_restart_and_answers_afterwards(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with (
        PrivatePostgres() as pg,
        FakeOpenAI(api_key="sk-outage") as llm,
    ):
        conninfo = pg.database("wxkf")
        async with run_simulator() as sim:
            env = wxkf_env(
                conninfo, sim, tmp_path / "var", LLM_BASE_URL=llm.base_url, LLM_API_KEY="sk-outage"
            )
            worker = start_wxkf(["worker", "--stalled-after", "3"], env, log)
            try:
                await _ask(sim, conninfo, "停机前")
                await _until(lambda: len(_replies(sim)) == 1, 60, "the first answer")

                pg.stop()
                await asyncio.sleep(3)  # the worker notices within its heartbeat (1 s)
                assert worker.poll() is None, log.read_text()
                pg.start()

                await _until(lambda: _beating(conninfo), 30, "the worker's heartbeat after the restart")
                await _ask(sim, conninfo, "恢复后")
                await _until(lambda: len(_replies(sim)) == 2, 30, "the answer after the restart")
                answered = [r.split("：", 1)[-1] for r in _replies(sim)]
            finally:
                worker.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(worker.wait, 30)
    output = log.read_text()
    assert answered == ["停机前", "恢复后"]
    assert code == 0, output
    assert "Traceback" not in output
    assert "the worker stopped" in output  # it said why it paused, in one line
