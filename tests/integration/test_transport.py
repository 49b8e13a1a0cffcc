"""The client's aiohttp transport keeps httpx's meaning: a connection that never opened may be retried,
one that broke after the request was written is "maybe delivered" (a send is not repeated), and
encoded bodies are decoded once. Served by a raw socket server, so each failure is exactly the one named."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from wxkf.wecom.client import RetryPolicy, WeComClient
from wxkf.wecom.errors import TransportError
from wxkf.wecom.tokens import MemoryTokenStore
from wxkf.wecom.transport import AiohttpTransport, ssl_context

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


async def test_an_upload_the_server_stops_reading_is_a_write_timeout() -> None:
    """aiohttp bounds connecting and reading only; httpx's write timeout must still end a stalled upload
    (a media/upload of up to 20 MB to a peer that stopped reading would otherwise wait forever)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_read, sock=listener)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/cgi-bin/media/upload"
    try:
        async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=0.2) as http:
            # The guard only turns a hang into a failure; the assertion is the exception type.
            async with asyncio.timeout(30):
                with pytest.raises(httpx.WriteTimeout):
                    await http.post(url, files={"media": ("a.bin", b"x" * (16 << 20), "video/mp4")})
    finally:
        for writer in accepted:
            writer.close()
        server.close()


async def test_a_proxy_refusing_the_tunnel_means_nothing_was_sent(
    raw: Callable[[Handler], Awaitable[RawServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An https call through a proxy whose CONNECT fails never reached WeCom: safe to repeat a send."""

    async def bad_gateway(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")

    async def hang_up(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.close()

    for handler in (bad_gateway, hang_up):
        proxy = await raw(handler)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        for name in ("NO_PROXY", "no_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=5) as http:
            with pytest.raises(httpx.ConnectError):
                await http.post("https://qyapi.weixin.qq.com/cgi-bin/kf/send_msg", json={})
        assert proxy.paths == ["qyapi.weixin.qq.com:443"]  # the CONNECT, and nothing else


async def test_a_proxy_named_without_a_scheme_is_an_http_proxy(
    raw: Callable[[Handler], Awaitable[RawServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`http_proxy=host:port` is common; httpx reads it as http://host:port, and so must we."""

    async def ok(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b'{"errcode": 0, "errmsg": "ok"}'))

    proxy = await raw(ok)
    monkeypatch.setenv("HTTP_PROXY", proxy.url.removeprefix("http://"))
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=5) as http:
        response = await http.get("http://qyapi.weixin.qq.com/cgi-bin/kf/account/list")
    assert response.json() == {"errcode": 0, "errmsg": "ok"}
    assert proxy.paths == ["http://qyapi.weixin.qq.com/cgi-bin/kf/account/list"]


async def test_a_large_upload_goes_out_whole_with_its_length(
    raw: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    """A media/upload above the socket buffers (and aiohttp's 1 MB warning for raw bytes) is sent
    with a Content-Length, not chunked, and WeCom's answer comes back."""
    heads: list[bytes] = []

    async def ok(head: bytes, writer: asyncio.StreamWriter) -> None:
        heads.append(head)
        writer.write(answer(b'{"errcode": 0, "errmsg": "ok"}'))

    server = await raw(ok)  # reads exactly Content-Length bytes before answering
    request = httpx.Request(
        "POST",
        f"{server.url}/cgi-bin/media/upload",
        files={"media": ("a.mp4", b"v" * (3 << 20), "video/mp4")},
    )
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=5) as http:
        response = await http.send(request)
    assert response.json() == {"errcode": 0, "errmsg": "ok"}
    lines = heads[0].lower().split(b"\r\n")
    assert f"content-length: {len(request.read())}".encode() in lines
    assert not any(line.startswith(b"transfer-encoding") for line in lines)


def _self_signed_ca(path: Path) -> str:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wxkf test company CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def test_ssl_cert_file_names_the_trusted_cas_as_in_httpx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A company CA (or an inspecting egress proxy's) given by SSL_CERT_FILE is trusted; otherwise certifi's."""
    monkeypatch.setenv("SSL_CERT_FILE", _self_signed_ca(tmp_path / "ca.pem"))
    subjects = [str(ca["subject"]) for ca in ssl_context().get_ca_certs()]
    assert subjects == [str(((("commonName", "wxkf test company CA"),),))]
    assert len(ssl_context(trust_env=False).get_ca_certs()) > 50  # certifi's bundle
