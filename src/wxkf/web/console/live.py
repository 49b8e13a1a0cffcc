"""Live updates: PostgreSQL LISTEN/NOTIFY fanned out to the console's Server-Sent Events streams.

Triggers on the pipeline's tables (migration `console_0001_console`) NOTIFY `wxkf_console` with the
conversation's key — `<open_kfid> <external_userid>` — whichever process wrote the row, so a console
open on one replica sees messages that arrive through another. Each process holds one LISTEN
connection while any of its streams is open, and keeps `console_watch.until` ahead of the clock
(the triggers stay silent when no console watches).

A stream sends `event: change` with a JSON list of keys, coalesced (a burst is one event; more than
`MAX_KEYS` pending becomes `["*"]`, refresh everything); `["*"]` also follows a lost connection to
the database, when notifications may have been missed. A stream opens once LISTEN is active, and
the page refreshes whenever its stream opens, so nothing between the page's render and the stream
goes unseen. Streams end after `STREAM_SECONDS`; the
browser's EventSource reconnects by itself (`retry:`) and refreshes, so a server shutting down never
waits long for an open console.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg

log = logging.getLogger("wxkf.console.live")

CHANNEL = "wxkf_console"
EVERYTHING = "*"
MAX_KEYS = 200
STREAM_SECONDS = 30.0
HEARTBEAT_SECONDS = 10.0
RETRY_MS = 1500
WATCH_SECONDS = 60  # how far ahead a listener keeps `console_watch.until`
WATCH_REFRESH_SECONDS = 20.0
IDLE_CLOSE_SECONDS = 10.0
LISTEN_WAIT_SECONDS = 5.0  # the LISTEN connection outlives the last stream by this much (reconnects)

_WATCH = (
    "UPDATE console_watch SET until = greatest(coalesce(until, now()), now() + make_interval(secs => %s))"
)


def conversation_key(open_kfid: str, external_userid: str) -> str:
    return f"{open_kfid} {external_userid}"


class Subscription:
    """What one stream has not sent yet."""

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.ready = asyncio.Event()

    def push(self, key: str) -> None:
        if EVERYTHING not in self.pending:
            self.pending.add(key)
            if len(self.pending) > MAX_KEYS:
                self.pending = {EVERYTHING}
        self.ready.set()

    def take(self) -> list[str]:
        keys = sorted(self.pending)
        self.pending.clear()
        self.ready.clear()
        return keys


class ChangeFeed:
    """The process's LISTEN connection, opened for the first stream and closed after the last."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self.listening = asyncio.Event()  # set while LISTEN is active (tests wait for it)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        subscription = Subscription()
        self._subscriptions.add(subscription)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="wxkf-console-listen")
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            if not self._subscriptions:
                self._idle = asyncio.get_running_loop().call_later(IDLE_CLOSE_SECONDS, self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        self._idle = None
        if not self._subscriptions and self._task is not None:
            self._task.cancel()
            self._task = None

    async def aclose(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _fan_out(self, key: str) -> None:
        for subscription in self._subscriptions:
            subscription.push(key)

    async def _listen(self) -> None:
        backoff = 0.5
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(_WATCH, (WATCH_SECONDS,))
                    self.listening.set()
                    if not first:
                        self._fan_out(EVERYTHING)  # notifications may have been missed meanwhile
                    first, backoff = False, 0.5
                    while True:
                        async for notify in conn.notifies(timeout=WATCH_REFRESH_SECONDS):
                            self._fan_out(notify.payload)
                        await conn.execute(_WATCH, (WATCH_SECONDS,))
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning(
                    "控制台实时更新与数据库断开，%.1f 秒后重连 / console live updates lost the database (%s)",
                    backoff,
                    type(exc).__name__,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                self.listening.clear()


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def stream(feed: ChangeFeed, *, seconds: float = STREAM_SECONDS) -> AsyncIterator[bytes]:
    """One browser's event stream: changes as they come, a heartbeat comment, then an end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with feed.subscribe() as subscription:
        # The page refreshes when the stream opens: from then on, no change may go unseen.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(feed.listening.wait(), LISTEN_WAIT_SECONDS)
        yield f"retry: {RETRY_MS}\n\n".encode()
        while (left := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(subscription.ready.wait(), min(HEARTBEAT_SECONDS, left))
            except TimeoutError:
                yield b": ping\n\n"
                continue
            yield sse("change", subscription.take())
