"""Encrypted `kf_msg_or_event` callbacks to the configured URL, retried and recorded like WeCom's.

wecom-api §1.7: no HTTP 200 within 5 s → retry, 3 retries in all. §1.5: the envelope is signed over
`Encrypt`; §2: the plaintext names the account and a 10-minute Token, never the message itself.

With several URLs (replicas behind a load balancer) each attempt goes to the next one, so a retry
reaches another replica. The waits between retries (UNCONFIRMED) are `callback_retry_delay`, times
`callback_retry_backoff` after each retry.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import httpx

from wxkf.simulator.errors import SimError
from wxkf.simulator.faults import FaultBook
from wxkf.simulator.world import World
from wxkf.wecom.crypto import CallbackCrypto

MAX_CONNECTIONS = 100  # deliveries in flight at once; more wait for a connection


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
        self.urls: list[str] = [url] if url else []
        self.crypto = CallbackCrypto(world.callback_token, world.encoding_aes_key, world.corp_id)
        self.attempts: deque[dict[str, Any]] = deque(maxlen=world.behaviour.log_capacity)
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = 0

    async def start(self) -> None:
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=MAX_CONNECTIONS))

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def url(self) -> str | None:
        """The first receiver (the only one unless several were set)."""
        return self.urls[0] if self.urls else None

    def schedule(self, open_kfid: str, token: str, create_time: int) -> None:
        """The `World.on_callback` hook: called synchronously inside a world operation."""
        if not self.urls or self._client is None:
            return
        self._seq += 1
        task = asyncio.get_running_loop().create_task(
            self._deliver(self._seq, list(self.urls), open_kfid, token, create_time)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def _deliver(self, seq: int, urls: list[str], open_kfid: str, token: str, create_time: int) -> None:
        assert self._client is not None
        behaviour = self.world.behaviour
        # CreateTime is the world's (possibly advanced) clock; the query's timestamp is when the
        # request is signed, on the wall clock, as receivers check it against theirs (§1.4).
        body, params = self.crypto.callback_envelope(
            event_xml(self.world.corp_id, open_kfid, token, create_time), timestamp=str(int(time.time()))
        )
        delay = behaviour.callback_retry_delay
        duplicated = False
        attempt = 0
        while attempt <= behaviour.callback_retries:
            attempt += 1
            url = urls[(seq + attempt - 2) % len(urls)]
            record: dict[str, Any] = {
                "callback": seq,
                "attempt": attempt,
                "url": url,
                "open_kfid": open_kfid,
                "token": token,
                "at": self.world.clock.now(),
                "monotonic": time.monotonic(),  # for the waits between attempts: `at` can be moved
                "status": None,
                "error": "",
                "latency_ms": 0.0,
                "duplicate": duplicated,
            }
            effect = self.faults.pick("callback", self.world.rng)
            if effect.drop:
                record["error"] = "dropped (injected fault)"
                self.attempts.append(record)
                return  # a dropped callback is lost, as when WeCom never sends it
            if effect.delay_ms:
                await asyncio.sleep(effect.delay_ms / 1000)
            started = time.perf_counter()
            if effect.unreachable:
                record["error"] = "unreachable (injected fault)"
            else:
                try:
                    response = await self._client.post(
                        url,
                        params=params,
                        content=body.encode(),
                        headers={"Content-Type": "text/xml"},
                        # §1.7's 5 s are the receiver's; waiting for one of our own connections is not.
                        timeout=httpx.Timeout(behaviour.callback_timeout, pool=None),
                    )
                    record["status"] = response.status_code
                except httpx.HTTPError as exc:
                    record["error"] = type(exc).__name__
            record["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
            self.attempts.append(record)
            if record["status"] == 200:
                if effect.duplicate and not duplicated:
                    duplicated = True  # WeCom delivers an acknowledged callback once more
                    attempt -= 1
                    continue
                return
            if record["status"] is not None and not behaviour.callback_retry_on_non_200:
                return
            if attempt <= behaviour.callback_retries and delay:
                await asyncio.sleep(delay)
                delay *= behaviour.callback_retry_backoff

    async def verify_url(self, url: str) -> None:
        """§1.4: GET `url` with a signed echostr; refuse (SimError 40058 with the admin console's
        words) unless HTTP 200 answers the bare plaintext within `url_verify_timeout`."""
        assert self._client is not None
        plain = str(self.world.rng.randrange(10**18, 10**19))  # a numeric string, as WeCom's (§1.4)
        reply = self.crypto.encrypt_reply(plain, timestamp=str(int(self.world.clock.now())))
        params = {
            "msg_signature": reply.signature,
            "timestamp": reply.timestamp,
            "nonce": reply.nonce,
            "echostr": reply.encrypt,
        }
        try:
            response = await self._client.get(
                url, params=params, timeout=self.world.behaviour.url_verify_timeout
            )
        except httpx.HTTPError as exc:
            raise SimError(
                40058, f"回调地址请求不通过 / the URL did not answer: {type(exc).__name__}"
            ) from exc
        if response.status_code != 200 or response.text != plain:
            raise SimError(
                40058,
                f"回调地址请求不通过：HTTP {response.status_code}，应原样返回解密后的 echostr / the URL must "
                "answer the decrypted echostr, bare",
            )

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no delivery is in flight (control API: lets tests sync without sleeping)."""
        deadline = time.monotonic() + seconds
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True
