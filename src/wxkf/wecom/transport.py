"""httpx's API on aiohttp's connections: the WeCom client's default transport.

The pipeline makes two WeCom calls per answered message (`service_state/get`, `send_msg`), and
httpx's own connection layer (httpcore + the pure-Python h11 parser) spent about 1.6 ms of CPU
per call; aiohttp's pool and C parser under the same httpx client spend about 0.7 ms
(benchmarks/README.md, "WeCom API client"). The client keeps httpx's API, request building,
decoding and exceptions: only the connections change.

What the client relies on is kept exact: which failures mean "the request never left"
(`httpx.ConnectError`, `httpx.ConnectTimeout`: safe to repeat a send) and which mean "it may have
reached WeCom" (every other `httpx.TransportError`: a send is not repeated, see `WeComClient._call`).
aiohttp itself repeats only idempotent methods on a dropped keep-alive connection; every kf API is a
POST, so nothing is sent twice underneath us.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import certifi
import httpx
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

# httpx's default pool: 100 connections, idle ones closed after 5 s.
MAX_CONNECTIONS = 100
KEEPALIVE_SECONDS = 5.0

# Headers aiohttp sets from the body it is given; httpx's would describe a stream it no longer sends.
_BODY_HEADERS = frozenset({"content-length", "transfer-encoding"})

# aiohttp writes a body in one go and arms `sock_read` only once it is written: it has no write
# timeout. A body larger than this goes out in chunks, each within httpx's write timeout (httpcore
# bounds each write the same way); smaller ones fit the socket buffers and cannot stall.
WRITE_CHUNK = 64 * 1024


def ssl_context(trust_env: bool = True) -> ssl.SSLContext:
    """The CA bundle httpx would use: SSL_CERT_FILE or SSL_CERT_DIR when trusted (a company CA, an
    inspecting egress proxy), else certifi's."""
    cafile = os.environ.get("SSL_CERT_FILE") if trust_env else None
    capath = os.environ.get("SSL_CERT_DIR") if trust_env else None
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    if capath:
        return ssl.create_default_context(capath=capath)
    return ssl.create_default_context(cafile=certifi.where())


class _NotConnectedError(aiohttp.ClientError):
    """The connection (or the proxy's tunnel) failed before any byte of the request was written."""


class _WriteStalledError(aiohttp.ClientError):
    """A chunk of the body was not written within the write timeout."""


class _Connector(aiohttp.TCPConnector):
    """aiohttp raises the proxy's answer to CONNECT (502, 407, a hang-up) as a response or
    disconnect error, like a failure after sending; it happens before the request is written."""

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature; it passes it by name
    ) -> Connection:
        try:
            return await super().connect(req, traces, timeout)
        except aiohttp.ClientConnectorError:
            raise
        except aiohttp.ClientError as exc:
            raise _NotConnectedError(f"{type(exc).__name__}: {exc}") from exc


class _PacedBody:
    """`body` in WRITE_CHUNK pieces; `deadline` (around the exchange) fires when one takes longer
    than `seconds` to be written, as httpx's write timeout would."""

    def __init__(self, body: bytes, deadline: asyncio.Timeout, seconds: float | None) -> None:
        self._body = body
        self._deadline = deadline
        self._seconds = seconds
        self.active = True  # False once the exchange is over: the deadline is no longer ours to move

    def _next_deadline(self, done: bool) -> None:
        if self.active and self._seconds is not None:
            loop = asyncio.get_running_loop()
            self._deadline.reschedule(None if done else loop.time() + self._seconds)

    async def chunks(self) -> AsyncIterator[bytes]:
        view = memoryview(self._body)
        for start in range(0, len(view), WRITE_CHUNK):
            self._next_deadline(done=False)
            yield bytes(view[start : start + WRITE_CHUNK])
        self._next_deadline(done=True)  # all written: from here on sock_read bounds the wait


@contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    """aiohttp's failures as the httpx exceptions they mean (most specific cases first)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # no connection within the limit: nothing was sent
        raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except (aiohttp.ClientConnectorError, _NotConnectedError) as exc:  # refused, DNS, TLS, proxy: not sent
        raise httpx.ConnectError(str(exc), request=request) from exc
    except _WriteStalledError as exc:  # part of the request may have been written
        raise httpx.WriteTimeout(str(exc), request=request) from exc
    except (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request) from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.ReadError(str(exc), request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:  # anything else after the request started: maybe delivered
        raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc


def proxy_for(scheme: str, host: str) -> str | None:
    """The proxy the environment names for (scheme, host): HTTP(S)_PROXY, ALL_PROXY, NO_PROXY."""
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()  # as httpx reads them
    proxy = proxies.get(scheme) or proxies.get("all")
    if proxy and "://" not in proxy:
        proxy = f"http://{proxy}"  # `https_proxy=host:port` names an HTTP proxy, as httpx reads it
    return proxy


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An `httpx.AsyncClient` transport backed by one `aiohttp.ClientSession` (created on first use,
    inside the running event loop; closed by the client's `aclose()`)."""

    def __init__(self, *, trust_env: bool = True) -> None:
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None
        # Proxies are read from the environment once per host, as httpx reads them once per client:
        # aiohttp's own `trust_env` reads the environment and the netrc file (in a thread) on every
        # request, which cost about a quarter of the worker's CPU.
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _proxy(self, url: httpx.URL) -> str | None:
        key = (url.scheme, url.host)
        if key not in self._proxies:
            self._proxies[key] = proxy_for(*key) if self._trust_env else None
        return self._proxies[key]

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = _Connector(
                limit=MAX_CONNECTIONS,
                keepalive_timeout=KEEPALIVE_SECONDS,
                ssl=ssl_context(self._trust_env),
            )
            # Cookies are never kept (httpx's client keeps its own jar, and WeCom sets none).
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # httpx decodes, from the headers it is given
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        body = await request.aread()  # JSON, or a multipart upload httpx built as a stream
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _BODY_HEADERS]
        proxy = self._proxy(request.url)
        limits = aiohttp.ClientTimeout(
            total=None,
            connect=timeout.get("pool"),  # waiting for a free connection, and connecting
            sock_connect=timeout.get("connect"),
            sock_read=timeout.get("read"),  # armed once the body is written; write: see _PacedBody
        )
        deadline = asyncio.timeout(None)
        paced = _PacedBody(body, deadline, timeout.get("write")) if len(body) > WRITE_CHUNK else None
        if paced is not None:
            headers.append(("Content-Length", str(len(body))))  # else aiohttp would send it chunked
        with _as_httpx_errors(request):
            try:
                async with deadline:
                    return await self._exchange(request, headers, body, paced, proxy, limits)
            except TimeoutError as exc:
                if deadline.expired():
                    raise _WriteStalledError("write timed out") from exc
                raise
            finally:
                if paced is not None:
                    paced.active = False

    async def _exchange(
        self,
        request: httpx.Request,
        headers: list[tuple[str, str]],
        body: bytes,
        paced: _PacedBody | None,
        proxy: str | None,
        limits: aiohttp.ClientTimeout,
    ) -> httpx.Response:
        async with self._client_session().request(
            request.method,
            str(request.url),
            headers=headers,
            data=paced.chunks() if paced is not None else body or None,
            allow_redirects=False,
            proxy=proxy,
            timeout=limits,
        ) as response:
            content = await response.read()
            return httpx.Response(
                status_code=response.status,
                headers=list(response.raw_headers),
                content=content,
                request=request,
                extensions={
                    "http_version": b"HTTP/1.1",
                    "reason_phrase": (response.reason or "").encode(),
                },
            )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
