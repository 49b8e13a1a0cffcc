"""A running pipeline for end-to-end tests: the simulator, the real app on a real port, a real worker.

    async with running_pipeline(settings_factory, responder) as run:
        await run.say(customer, "你好")
        await run.until(lambda: len(run.texts(customer)) == 1)

The app (callback route + procrastinate worker) runs in the test's event loop; the simulator runs in
its own thread, so its blocking control calls go through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import uvicorn
from fastapi import FastAPI

from wxkf.kf.responder import Reply, ReplyRequest, Responder
from wxkf.simulator.testing import SimulatorHandle, run_simulator
from wxkf.web.app import create_app


@dataclass
class ScriptedResponder:
    """Answers "答复：<texts>" (or what `answer` returns) and keeps every request."""

    answer: Callable[[ReplyRequest], Reply] | None = None
    requests: list[ReplyRequest] = field(default_factory=list)

    async def respond(self, request: ReplyRequest) -> Reply:
        self.requests.append(request)
        if self.answer is not None:
            return self.answer(request)
        return Reply(text="答复：" + " | ".join(m.text for m in request.messages))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningPipeline:
    sim: SimulatorHandle
    conninfo: str
    base_url: str
    app: FastAPI

    async def control(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.sim.control, method), *args, **kwargs)

    async def say(self, customer: str, text: str) -> dict[str, Any]:
        item: dict[str, Any] = await self.control("send_text", customer, text)
        return item

    async def received(self, customer: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = await self.control("received", customer)
        return items

    async def texts(self, customer: str, via: str = "send_msg") -> list[str]:
        return [
            r["text"]["content"]
            for r in await self.received(customer)
            if r.get("via") == via and r["msgtype"] == "text"
        ]

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.conninfo) as conn:
            cur = await conn.execute(sql, params)
            return list(await cur.fetchall())

    async def until(self, check: Callable[[], Any], timeout: float = 20.0) -> None:
        """Poll an async or sync condition until true (the pipeline works in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.05)

    async def idle(self, timeout: float = 20.0) -> None:
        """No callback in flight, no job due or running, nothing pending (a job scheduled for later,
        such as a queue timeout, is not in flight)."""

        async def quiet() -> bool:
            if not await self.control("wait_callbacks"):
                return False
            rows = await self.query(
                "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                " AND (scheduled_at IS NULL OR scheduled_at <= now()))"
                " + (SELECT count(*) FROM kf_inbound WHERE status = 'pending')"
                " + (SELECT count(*) FROM kf_outbox WHERE status = 'pending')"
            )
            return bool(rows[0][0] == 0)

        await self.until(quiet, timeout)


@asynccontextmanager
async def running_pipeline(
    settings_factory: Any,
    responder: Responder | None,
    *,
    run_worker: bool = True,
    simulator: run_simulator | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningPipeline]:
    """The app on a real port against the simulator: a new one, or a running `simulator` to go on
    with its world."""
    async with contextlib.AsyncExitStack() as stack:
        if simulator is None:
            simulator = run_simulator()
            await stack.enter_async_context(simulator)
        sim = simulator.handle
        values: dict[str, Any] = {
            **sim.settings_overrides(),
            "kf_debounce_seconds": 0.3,
            "kf_poll_interval_seconds": 0.05,
            **overrides,
        }
        settings = settings_factory(**values)
        # wxkf's clock is the simulator's: advancing it moves windows and quiet hours on both sides.
        app = create_app(
            settings, run_worker=run_worker, responder=responder, clock=simulator.world.clock.utcnow
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:  # uvicorn has no started event; poll its flag
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            base_url = f"http://127.0.0.1:{port}"
            # Saved as in the admin console: the URL verification (wecom-api §1.4) must pass first.
            await asyncio.to_thread(sim.control.save_callback_url, f"{base_url}/wecom/callback")
            conninfo = settings.database_url.get_secret_value()
            yield RunningPipeline(sim, conninfo, base_url, app)
        finally:
            server.should_exit = True
            await task
