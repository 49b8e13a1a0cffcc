"""The client's aiohttp transport keeps httpx's meaning: a connection that never opened may be retried,
one that broke after the request was written is "maybe delivered" (a send is not repeated), and
encoded bodies are decoded once. Served by a raw socket server, so each failure is exactly the one named."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from wxkf.wecom.client import RetryPolicy, WeComClient
from wxkf.wecom.errors import TransportError
from wxkf.wecom.tokens import MemoryTokenStore
from wxkf.wecom.transport import AiohttpTransport

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]
TOKEN = json.dumps({"errcode": 0, "errmsg": "ok", "access_token": "TOKEN", "expires_in": 7200}).encode()


def answer(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class RawServer:
    """Reads one HTTP/1.1 request at a time and lets `handler` answer (or not)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.paths: list[str] = []
        self.url = ""
        self.server: asyncio.Server | None = None

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                path = head.split(b" ")[1].decode().split("?")[0]
                self.paths.append(path)
                if path == "/cgi-bin/gettoken":
                    writer.write(answer(TOKEN, "Connection: close"))
                    await writer.drain()
                    writer.close()
                else:
                    await self.handler(head, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> RawServer:
        server = RawServer(handler)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        server.server = running = await asyncio.start_server(server._serve, sock=sock)
        servers.append(running)
        server.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return server

    yield start
    for running in servers:
        running.close()


def client_for(url: str) -> WeComClient:
    return WeComClient(
        url,
        "ww_corp",
        "s3cret",
        token_store=MemoryTokenStore(),
        retry=RetryPolicy(attempts=3, base_delay=0.001),
    )


async def test_a_connection_dropped_after_the_request_is_maybe_delivered(
    raw: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    async def hang_up(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await raw(hang_up)
    async with client_for(server.url) as wecom:
        with pytest.raises(TransportError, match="not retried"):
            await wecom.send_text("wk1", "wm1", "你好", msgid="m1")
        assert server.paths.count("/cgi-bin/kf/send_msg") == 1  # a send is not repeated
        with pytest.raises(TransportError, match="RemoteProtocolError"):
            await wecom.get_service_state("wk1", "wm1")  # a read is retried, up to the budget
        assert server.paths.count("/cgi-bin/kf/service_state/get") == 3


async def test_a_refused_connection_is_retried_even_for_a_send(
    raw: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    async def unused(head: bytes, writer: asyncio.StreamWriter) -> None:
        raise AssertionError("no request should arrive")

    server = await raw(unused)
    async with client_for(server.url) as wecom:
        await wecom.access_token()  # over a connection the server then closes
        await server.stop()  # nothing listens any more: a new connection is refused
        with pytest.raises(TransportError) as caught:
            await wecom.send_text("wk1", "wm1", "你好", msgid="m1")
    assert "ConnectError" in str(caught.value)
    assert "not retried" not in str(caught.value)  # never sent, so repeating was safe


async def test_an_encoded_answer_is_decoded_once(raw: Callable[[Handler], Awaitable[RawServer]]) -> None:
    body = gzip.compress(
        json.dumps({"errcode": 0, "errmsg": "ok", "service_state": 1, "servicer_userid": ""}).encode()
    )

    async def gzipped(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(body, "Content-Encoding: gzip"))

    server = await raw(gzipped)
    async with client_for(server.url) as wecom:
        state = await wecom.get_service_state("wk1", "wm1")
    assert state == (1, None)


async def test_a_slow_answer_is_a_read_timeout(raw: Callable[[Handler], Awaitable[RawServer]]) -> None:
    release = asyncio.Event()

    async def slow(head: bytes, writer: asyncio.StreamWriter) -> None:
        await release.wait()

    server = await raw(slow)
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=0.05) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{server.url}/cgi-bin/kf/send_msg", json={})
    release.set()
