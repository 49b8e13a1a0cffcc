"""Encrypted `kf_msg_or_event` callbacks to the configured URL, retried and recorded like WeCom's.

wecom-api §1.7: no HTTP 200 within 5 s → retry, 3 retries in all. §1.5: the envelope is signed over
`Encrypt`; §2: the plaintext names the account and a 10-minute Token, never the message itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import httpx

from wxkf.simulator.faults import FaultBook
from wxkf.simulator.world import World
from wxkf.wecom.crypto import CallbackCrypto


def event_xml(corp_id: str, open_kfid: str, token: str, create_time: int) -> str:
    """§2: the decrypted kf_msg_or_event body."""
    return (
        f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><CreateTime>{create_time}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
        f"<Token><![CDATA[{token}]]></Token><OpenKfId><![CDATA[{open_kfid}]]></OpenKfId></xml>"
    )


class CallbackDispatcher:
    """Delivers callbacks in background tasks on the simulator's loop and records every attempt."""

    def __init__(self, world: World, faults: FaultBook, url: str | None) -> None:
        self.world = world
        self.faults = faults
        self.url = url
        self.crypto = CallbackCrypto(world.callback_token, world.encoding_aes_key, world.corp_id)
        self.attempts: deque[dict[str, Any]] = deque(maxlen=world.behaviour.log_capacity)
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = 0

    async def start(self) -> None:
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=50))

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def schedule(self, open_kfid: str, token: str, create_time: int) -> None:
        """The `World.on_callback` hook: called synchronously inside a world operation."""
        if not self.url or self._client is None:
            return
        self._seq += 1
        task = asyncio.get_running_loop().create_task(
            self._deliver(self._seq, self.url, open_kfid, token, create_time)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def _deliver(self, seq: int, url: str, open_kfid: str, token: str, create_time: int) -> None:
        assert self._client is not None
        behaviour = self.world.behaviour
        # CreateTime is the world's (possibly advanced) clock; the query's timestamp is when the
        # request is signed, on the wall clock, as receivers check it against theirs (§1.4).
        body, params = self.crypto.callback_envelope(
            event_xml(self.world.corp_id, open_kfid, token, create_time), timestamp=str(int(time.time()))
        )
        for attempt in range(1, behaviour.callback_retries + 2):
            record: dict[str, Any] = {
                "callback": seq,
                "attempt": attempt,
                "open_kfid": open_kfid,
                "token": token,
                "at": self.world.clock.now(),
                "status": None,
                "error": "",
                "latency_ms": 0.0,
            }
            fault = self.faults.pick("callback", self.world.rng)
            if fault is not None and fault.drop:
                record["error"] = "dropped (injected fault)"
                self.attempts.append(record)
                return  # a dropped callback is lost, as when WeCom never sends it
            if fault is not None and fault.delay_ms:
                await asyncio.sleep(fault.delay_ms / 1000)
            started = time.perf_counter()
            try:
                response = await self._client.post(
                    url,
                    params=params,
                    content=body.encode(),
                    headers={"Content-Type": "text/xml"},
                    timeout=behaviour.callback_timeout,
                )
                record["status"] = response.status_code
            except httpx.HTTPError as exc:
                record["error"] = type(exc).__name__
            record["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
            self.attempts.append(record)
            if record["status"] == 200:
                return
            if record["status"] is not None and not behaviour.callback_retry_on_non_200:
                return
            if attempt <= behaviour.callback_retries and behaviour.callback_retry_delay:
                await asyncio.sleep(behaviour.callback_retry_delay)

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no delivery is in flight (control API: lets tests sync without sleeping)."""
        deadline = time.monotonic() + seconds
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True
