"""`GET /ready`, `GET /metrics`, and the request id every log line of a request carries.

`install(app)` is the one line the app factory needs. `/health` (the process is alive) stays in the
app factory; `/ready` says whether this deployment can do its job right now:

    database      `SELECT 1` answers
    job_workers   at least one procrastinate worker sent a heartbeat recently (API and workers
                  may be separate processes: without a worker, callbacks are stored but never answered)
    wecom_token   an access_token for the kf secret is in the shared token table, or gettoken gives
                  one now (the token table makes that at most one gettoken per token lifetime)
    knowledge_base  documents and chunks; `degraded` when empty (`wxkf kb add`) or embedded by another
                  model (`wxkf kb reindex`): customers are told the bot does not know
    llm           `degraded` when LLM calls failed lately (a wrong key, an outage): customers get the
                  offline knowledge-base answer meanwhile; `disabled` without a key

Each component is `ok`, `degraded` (working, with less: the reason says what to fix), `fail` (with
the reason) or `disabled` (not configured); HTTP 503 when any is `fail`. Nothing here shows a secret: errors are reduced to their errcode and first words.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wxkf.config import Settings
from wxkf.db.engine import Pool
from wxkf.ops.logging import log_context, new_request_id
from wxkf.ops.metrics import alive_workers, collect, registry
from wxkf.wecom.client import RetryPolicy, WeComClient
from wxkf.wecom.errors import APIError, WeComError
from wxkf.wecom.tokens import PostgresTokenStore, TokenKey

READY_TIMEOUT = 5.0
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode()  # ASGI header names are lower-case bytes

Component = dict[str, Any]


class RequestIdMiddleware:
    """Bind the caller's X-Request-ID (or a new one) to every log line of the request, and echo it.

    Plain ASGI rather than Starlette's BaseHTTPMiddleware, which wraps every request in a task
    group and memory streams: on the callback route that was a tenth of the server's CPU.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (value.decode("latin-1") for name, value in scope["headers"] if name == _REQUEST_ID_KEY), ""
        )
        request_id = incoming if incoming.isascii() and 0 < len(incoming) <= 64 else new_request_id()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (_REQUEST_ID_KEY, request_id.encode("latin-1"))]
                message = {**message, "headers": headers}
            await send(message)

        with log_context(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def install(app: FastAPI) -> None:
    """Add `/ready`, `/metrics` and the request-id middleware to the app."""
    app.include_router(router)
    app.add_middleware(RequestIdMiddleware)


router = APIRouter()


def _pool(request: Request) -> Pool:
    pool: Pool = request.app.state.database.pool
    return pool


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Whether this deployment can answer customers now; 503 lists what is not ready."""
    settings: Settings = request.app.state.settings
    database = getattr(request.app.state, "database", None)
    if database is None:
        components: dict[str, Component] = {"database": {"state": "fail", "error": "starting"}}
    else:
        pool: Pool = database.pool
        names = ("database", "job_workers", "wecom_token", "knowledge_base", "llm")
        checks: list[Callable[[], Awaitable[Component]]] = [
            lambda: _database(pool),
            lambda: _workers(pool),
            lambda: _wecom_token(settings, pool),
            lambda: _knowledge_base(settings, pool),
            lambda: _llm(settings, pool),
        ]
        results = await asyncio.gather(*(_bounded(check) for check in checks))
        components = dict(zip(names, results, strict=True))
    is_ready = all(c["state"] != "fail" for c in components.values())
    body = {"status": "ready" if is_ready else "not_ready", "components": components}
    return JSONResponse(body, status_code=200 if is_ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics, in the exposition format the scraper's Accept header asks for."""
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry(await collect(_pool(request)))), headers={"Content-Type": content_type})


async def _bounded(check: Callable[[], Awaitable[Component]]) -> Component:
    try:
        return await asyncio.wait_for(check(), READY_TIMEOUT)
    except TimeoutError:
        return {"state": "fail", "error": f"no answer within {READY_TIMEOUT:.0f} s"}


async def _database(pool: Pool) -> Component:
    try:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return {"state": "fail", "error": type(exc).__name__}
    return {"state": "ok"}


async def _workers(pool: Pool) -> Component:
    try:
        async with pool.connection() as conn:
            alive = await alive_workers(conn)
    except psycopg.Error as exc:
        return {"state": "fail", "error": type(exc).__name__}
    if alive == 0:
        return {
            "state": "fail",
            "alive": 0,
            "error": "没有运行中的 worker：运行 wxkf worker 或 wxkf serve --worker / no job worker is running",
        }
    return {"state": "ok", "alive": alive}


async def _knowledge_base(settings: Settings, pool: Pool) -> Component:
    from wxkf.agent.health import knowledge_problem, read_knowledge_status
    from wxkf.agent.kb.embedders import make_embedder

    embedder = make_embedder(settings)  # builds no model: the version is the package's
    try:
        async with pool.connection() as conn:
            status = await read_knowledge_status(conn, embedder)
    except psycopg.Error as exc:
        return {"state": "fail", "error": type(exc).__name__}
    finally:
        await embedder.aclose()
    found: Component = {"documents": status.documents, "chunks": status.chunks, "embedder": status.embedder}
    problem = knowledge_problem(status)
    if problem is not None:
        return {"state": "degraded", **found, "error": problem[0], "fix": problem[1]}
    return {"state": "ok", **found}


async def _llm(settings: Settings, pool: Pool) -> Component:
    from wxkf.agent.health import LLM_FAILURE_WINDOW_MINUTES, recent_llm_failure

    key = settings.llm_key
    if key is None or not key.get_secret_value():
        return {"state": "disabled"}
    try:
        async with pool.connection() as conn:
            failure = await recent_llm_failure(conn)
    except psycopg.Error as exc:
        return {"state": "fail", "error": type(exc).__name__}
    if failure is None:
        return {"state": "ok", "model": settings.llm_model}
    return {
        "state": "degraded",
        "model": settings.llm_model,
        "kind": failure.kind,
        "status_code": failure.status_code,
        "failures": failure.recent,
        "last_failed_at": failure.failed_at.isoformat(),
        "error": (
            f"最近 {LLM_FAILURE_WINDOW_MINUTES} 分钟内大模型调用失败 {failure.recent} 次（{failure.kind}），"
            "客户暂由知识库离线回答 / LLM calls failed lately: customers get the offline knowledge-base answer"
        ),
    }


async def _wecom_token(settings: Settings, pool: Pool) -> Component:
    secret = settings.wecom_kf_secret
    if secret is None or not secret.get_secret_value() or not settings.wecom_corp_id:
        return {"state": "disabled"}
    store = PostgresTokenStore(pool)
    try:
        stored = await store.load(TokenKey.for_secret(settings.wecom_corp_id, secret.get_secret_value()))
        if stored is not None and stored.fresh():
            return {"state": "ok", "expires_at": stored.expires_at.isoformat()}
        async with WeComClient(
            settings.wecom_api_base,
            settings.wecom_corp_id,
            secret,
            token_store=store,
            retry=RetryPolicy(attempts=1),
            timeout=READY_TIMEOUT,
        ) as client:
            await client.access_token()
    except APIError as exc:
        return {"state": "fail", "errcode": exc.errcode, "error": exc.errmsg.split(",")[0]}
    except WeComError as exc:
        return {"state": "fail", "error": type(exc).__name__}
    except psycopg.Error as exc:
        return {"state": "fail", "error": type(exc).__name__}
    finally:
        await store.aclose()
    return {"state": "ok"}
