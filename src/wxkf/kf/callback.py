"""`/wecom/callback`: URL verification (GET) and the kf_msg_or_event callback (POST), wecom-api §1, §2.

The POST does the least that makes the callback durable — verify, decrypt, record (deduplicated),
defer a sync job — and answers 200 "success" in milliseconds; sync_msg runs in the worker. WeCom
repeats a callback it thinks failed (§1.7); a repeat changes nothing but a delivery counter.

Bad input gets a 4xx and one log line with the reason, and nothing is recorded: bad signature or
wrong corp id → 403; malformed XML, ciphertext, timestamp or field → 400; a body over 1 MiB → 413
(checked from Content-Length and while reading, before decrypting anything); a body that arrives
slower than BODY_READ_TIMEOUT → 408. Never a 5xx for bad input: a 503 only when the database is
unavailable (WeCom then delivers the callback again, §1.7).

Replays. wecom-api §1.4 says the timestamp and nonce are there "用于防止请求重放攻击" but gives no
window (UNCONFIRMED). wxkf accepts a signed request whose `timestamp` is within
CALLBACK_MAX_SKEW_SECONDS (10 minutes) of its own clock, either way, and refuses any other as
`stale`: WeCom signs a callback when it sends it and repeats a failed one within seconds, and the
callback's Token is valid for 10 minutes (§2), so an older callback could not be synced with anyway.
Inside the window a replay changes nothing but a delivery counter (the dedupe key). A server clock
off by more than the window refuses every callback: `wxkf doctor` checks the clock.

Each refusal adds one to `kf.callback.<outcome>` in `kf_counters` (exported as
`wxkf_callbacks_total{outcome}`), and nothing else is written: bad_signature, wrong_corp_id,
malformed, stale, oversized, slow, disconnected, not_configured, and url_refused for a failed URL
verification. A non-kf callback on this URL is acknowledged and counted as `ignored`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import unquote_plus

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from procrastinate.exceptions import ConnectorException
from psycopg_pool import AsyncConnectionPool
from starlette.requests import ClientDisconnect

from wxkf.config import Settings
from wxkf.db.engine import application_name
from wxkf.kf import ledger
from wxkf.kf.jobs import defer_sync, sync_lock
from wxkf.kf.runtime import Pipeline
from wxkf.wecom.crypto import CallbackCrypto
from wxkf.wecom.errors import CallbackCryptoError, CorpIdMismatchError, InvalidSignatureError

log = logging.getLogger("wxkf.kf.callback")

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a real envelope is well under 4 KiB
BODY_READ_TIMEOUT = 10.0  # seconds for the whole body: WeCom gives up after 5 s (§1.7)
CALLBACK_MAX_SKEW_SECONDS = 600  # a signed timestamp this far from our clock is refused (see above)
MAX_TIMESTAMP_DIGITS = 10  # unix seconds until the year 2286
MAX_ID_CHARS = 128  # OpenKfId and Token: WeCom's are under 64; the dedupe index holds a few KiB at most
MAX_CREATE_TIME = 2**63 - 1  # CreateTime is stored as a bigint
KF_EVENT = "kf_msg_or_event"  # wecom-api §2
NOT_CONFIGURED = "回调未配置：设置 WECOM_TOKEN、WECOM_AES_KEY、WECOM_CORP_ID / callback not configured"


class BodyTooLarge(Exception):
    """The body is over MAX_BODY_BYTES (control flow inside this module)."""


def _timestamp_problem(timestamp: str) -> str | None:
    """Why `timestamp` is not a plausible unix time in seconds (None: it is)."""
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > MAX_TIMESTAMP_DIGITS:
        return "timestamp 不是以秒为单位的 Unix 时间 / timestamp is not a unix time in seconds"
    return None


def _stale(timestamp: str) -> str | None:
    """Why a verified request is refused for its age (None: inside the replay window)."""
    skew = int(timestamp) - time.time()
    if abs(skew) <= CALLBACK_MAX_SKEW_SECONDS:
        return None
    return (
        f"timestamp 与本机时钟相差 {skew:+.0f} 秒，超过 {CALLBACK_MAX_SKEW_SECONDS} 秒：重放的旧回调，"
        f"或本机时钟不准（wxkf doctor 检查时钟）/ timestamp is {skew:+.0f} s from this server's clock: "
        "a replayed callback, or a wrong clock (wxkf doctor checks it)"
    )


def _reject(status: int, reason: str) -> PlainTextResponse:
    log.warning(
        "回调被拒绝 / callback rejected (%d): %s", status, reason, extra={"decision": "callback_rejected"}
    )
    return PlainTextResponse(reason, status_code=status)


def _status_for(error: CallbackCryptoError) -> int:
    return 403 if isinstance(error, InvalidSignatureError | CorpIdMismatchError) else 400


def _outcome_for(error: CallbackCryptoError) -> str:
    if isinstance(error, InvalidSignatureError):
        return "bad_signature"
    if isinstance(error, CorpIdMismatchError):
        return "wrong_corp_id"
    return "malformed"


async def _read_body(request: Request) -> bytes:
    """The body, at most MAX_BODY_BYTES, within BODY_READ_TIMEOUT (TimeoutError): a client that
    trickles bytes must not hold a connection and a task for as long as it likes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(BODY_READ_TIMEOUT):
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BodyTooLarge()
            chunks.append(chunk)
    return b"".join(chunks)


EventKey = tuple[str, str, int]  # open_kfid, Token, CreateTime: what makes a callback a repeat

# One statement for a whole batch: each distinct callback is inserted once with the number of times it
# arrived (a repeat already stored adds to `deliveries`), and each account's queued sync is looked up
# in procrastinate's table, so a burst needs no second round trip to find it already queued. The
# batch is one JSON array of [open_kfid, token, create_time, known_account, deliveries, sync_lock]
# rows: psycopg would dump six arrays element by element in Python, and keyed objects cost twice
# as much to encode.
_RECORD_EVENTS = """
WITH incoming AS (
    SELECT r->>0 AS open_kfid, r->>1 AS token, (r->>2)::bigint AS create_time,
           (r->>3)::boolean AS known_account, (r->>4)::integer AS deliveries, r->>5 AS sync_lock
    FROM json_array_elements(%s::json) AS r
), stored AS (
    INSERT INTO kf_callback_events (open_kfid, token, create_time, known_account, deliveries)
    SELECT open_kfid, token, create_time, known_account, deliveries FROM incoming
    ON CONFLICT (open_kfid, token, create_time)
    DO UPDATE SET deliveries = kf_callback_events.deliveries + EXCLUDED.deliveries
    RETURNING open_kfid, token, create_time, deliveries
)
SELECT s.open_kfid, s.token, s.create_time, s.deliveries = i.deliveries AS inserted,
       EXISTS (SELECT 1 FROM procrastinate_jobs WHERE queueing_lock = i.sync_lock AND status = 'todo')
FROM stored s JOIN incoming i USING (open_kfid, token, create_time)
"""
WRITER_ROLE = "wxkf-callbacks"  # the writer's connection in pg_stat_activity: `wxkf-callbacks:<pid>`
WRITE_TIMEOUT = 10.0  # seconds for a batch's statement, and for connecting (WeCom waits 5 s)
CLOSE_TIMEOUT = 5.0  # seconds shutdown waits for the batch in flight


class _EventWriter:
    """Writes callback events in batches without waiting for a batch to fill.

    The first callback is written at once; callbacks arriving while that write is in flight queue up
    and go together in the next statement. An idle server answers as before; a busy one commits a
    burst in a few statements instead of one per callback. A failed write fails every callback of
    its batch (WeCom then repeats them), never some silently.

    Batches are written one at a time, so the writer keeps one connection of its own rather than
    borrowing from the pool for each (the pool's checkout cost as much as a sixth of the write).
    A connection that broke since the last batch (database restarted, idle connection dropped) is
    replaced and the batch written again on the new one. If the lost attempt had in fact committed,
    the second adds the batch's arrivals to `deliveries` again and reports its callbacks as repeats:
    counters off by one batch, nothing lost or synced twice. A write that takes longer than
    WRITE_TIMEOUT fails its batch (WeCom has given up on those callbacks by then and repeats them).
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._queue: list[tuple[EventKey, bool, asyncio.Future[tuple[bool, bool]]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    async def write(self, key: EventKey, known: bool) -> tuple[bool, bool]:
        if self._closed:
            raise RuntimeError(
                "回调写入已关闭（服务正在停止）/ the callback writer is closed (shutting down)"
            )
        future: asyncio.Future[tuple[bool, bool]] = asyncio.get_running_loop().create_future()
        self._queue.append((key, known, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        # The write runs in its own task: a caller that goes away cancels only its own future.
        return await future

    async def close(self) -> None:
        """Let the batch in flight finish (its callers get their answers), then close the connection."""
        self._closed = True
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=CLOSE_TIMEOUT)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await self._store(batch)
            except BaseException as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_key, _, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _connect(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            application_name=application_name(WRITER_ROLE),
            connect_timeout=int(WRITE_TIMEOUT),
            keepalives=1,  # a database host that silently vanished is noticed, not waited on
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )

    async def _execute(self, rows_json: str) -> list[tuple[Any, ...]]:
        """Run the batch's statement on the writer's connection, replacing a broken one once."""
        while True:
            fresh = self._conn is None or self._conn.closed
            if fresh:
                self._conn = await self._connect()
            conn = self._conn
            assert conn is not None
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    cur = await conn.execute(_RECORD_EVENTS, (rows_json,), prepare=True)
                    return await cur.fetchall()
            except psycopg.OperationalError:
                if not conn.broken:
                    raise
                self._conn = None
                await conn.close()
                if fresh:  # a connection made for this batch: the database itself is the problem
                    raise
                log.warning(
                    "回调写入连接已断开，重新连接 / the callback writer's connection broke; reconnecting"
                )
            except BaseException:
                if conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    self._conn = None  # interrupted mid-statement (cancelled, timed out): state unknown
                    await conn.close()
                raise

    async def _store(
        self, batch: list[tuple[EventKey, bool, asyncio.Future[tuple[bool, bool]]]]
    ) -> list[tuple[bool, bool] | Exception]:
        """(is new, sync queued) for each entry of `batch`, in order; one statement.

        A statement the database refuses while the connection is fine (a value it cannot store)
        is written again one callback at a time, so the one row it refuses fails alone.
        """
        arrivals: dict[EventKey, int] = {}
        known: dict[EventKey, bool] = {}
        for key, is_known, _ in batch:
            arrivals[key] = arrivals.get(key, 0) + 1
            known[key] = is_known
        stored: dict[EventKey, tuple[bool, bool] | Exception]
        try:
            stored = dict(await self._write(list(arrivals), arrivals, known))
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) or len(arrivals) == 1:
                raise
            log.warning("回调批量写入被拒，逐条重写 / a callback batch was refused: rows written one by one")
            stored = {}
            for key in arrivals:
                try:
                    stored.update(await self._write([key], arrivals, known))
                except psycopg.Error as row_exc:
                    if isinstance(row_exc, psycopg.OperationalError):
                        raise
                    stored[key] = row_exc
        results: list[tuple[bool, bool] | Exception] = []
        seen: set[EventKey] = set()
        for key, _, _ in batch:
            outcome = stored[key]
            if isinstance(outcome, Exception):
                results.append(outcome)
            else:
                inserted, sync_queued = outcome
                results.append((inserted and key not in seen, sync_queued))  # the first arrival is new
            seen.add(key)
        return results

    async def _write(
        self, keys: list[EventKey], arrivals: dict[EventKey, int], known: dict[EventKey, bool]
    ) -> dict[EventKey, tuple[bool, bool]]:
        rows_json = json.dumps(
            [[k[0], k[1], k[2], known[k], arrivals[k], sync_lock(k[0])] for k in keys], ensure_ascii=False
        )
        rows = await self._execute(rows_json)
        return {(row[0], row[1], int(row[2])): (bool(row[3]), bool(row[4])) for row in rows}


class CallbackReceiver:
    """Records kf callbacks and defers the account's sync job."""

    def __init__(self, settings: Settings, pipeline: Pipeline) -> None:
        self.crypto: CallbackCrypto | None = None
        if settings.callback_configured and settings.wecom_token and settings.wecom_aes_key:
            self.crypto = CallbackCrypto(
                settings.wecom_token.get_secret_value(),
                settings.wecom_aes_key.get_secret_value(),
                settings.wecom_corp_id,
            )
        else:
            log.warning(
                "⚠️ 未配置企业微信回调（WECOM_CORP_ID、WECOM_TOKEN、WECOM_AES_KEY）：收不到客户消息，"
                "运行 wxkf doctor 查看缺什么 / the WeCom callback is not configured (WECOM_CORP_ID, "
                "WECOM_TOKEN, WECOM_AES_KEY): no customer message can arrive; `wxkf doctor` says what is missing"
            )
        self.accounts = frozenset(a.strip() for a in settings.kf_accounts.split(",") if a.strip())
        self._pool: AsyncConnectionPool[Any] = pipeline.pool
        self._pipeline = pipeline
        self._deferring: dict[str, asyncio.Future[None]] = {}
        self._events = _EventWriter(pipeline.conninfo)

    async def close(self) -> None:
        """Finish the event write in flight and close the writer's connection."""
        await self._events.close()

    async def count(self, outcome: str) -> None:
        """One more callback with `outcome` in `kf_counters`; a database hiccup costs the count, not a 5xx."""
        try:
            async with self._pool.connection() as conn:
                await ledger.count(conn, f"kf.callback.{outcome}")
        except psycopg.Error as exc:
            log.warning("回调计数失败 / could not count a %s callback: %s", outcome, type(exc).__name__)

    async def refuse(self, outcome: str, status: int, reason: str) -> PlainTextResponse:
        """Count the refusal, log it, and answer `status` with the reason."""
        await self.count(outcome)
        return _reject(status, reason)

    async def unavailable(self, error: Exception) -> PlainTextResponse:
        """503: the database is away; WeCom delivers the callback again (§1.7). One line, no traceback."""
        cause = error.__cause__ or error
        lines = str(cause).strip().splitlines()
        log.warning(
            "数据库不可用，回调未记录（企业微信会重试）/ database unavailable, callback not recorded: %s: %s",
            type(cause).__name__,
            lines[0] if lines else "",
            extra={"decision": "callback_unavailable"},
        )
        return PlainTextResponse("数据库不可用 / database unavailable", status_code=503)

    def known(self, open_kfid: str) -> bool:
        return bool(open_kfid) and (not self.accounts or open_kfid in self.accounts)

    async def record(self, open_kfid: str, token: str, create_time: int) -> tuple[bool, bool]:
        """Store the event durably: (is it new, is a sync of the account already queued).

        Callbacks that arrive while an earlier write is in flight are written together in the next
        one (`_EventWriter`); each caller still answers only after its own row is committed.
        """
        return await self._events.write((open_kfid, token, create_time), self.known(open_kfid))

    async def defer_sync(self, open_kfid: str, token: str) -> None:
        """Defer the account's sync; concurrent callers for one account share one defer.

        Sharing is safe: the job that defer creates (or finds queued) starts after the defer returns,
        so it sees every message WeCom had when any of the callers' callbacks was sent.
        """
        running = self._deferring.get(open_kfid)
        if running is not None:
            await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._deferring[open_kfid] = future
        try:
            await defer_sync(self._pipeline.procrastinate, open_kfid, token)
            future.set_result(None)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self._deferring[open_kfid]
            if future.done() and not future.cancelled():
                future.exception()  # retrieved, so an unshared failure is not reported twice


def _receiver(request: Request) -> CallbackReceiver:
    receiver: CallbackReceiver = request.app.state.callback_receiver
    return receiver


def _query(request: Request, *names: str) -> list[str]:
    """The named query parameters ("" when absent; the last one when repeated, as Starlette reads them).

    Read directly rather than declared: FastAPI's dependency resolution cost more CPU than verifying
    and recording the callback, and Starlette's parser (`parse_qsl`) decodes every value even when,
    as in WeCom's signature, timestamp and nonce, there is nothing to decode.
    """
    params: dict[str, str] = {}
    for part in request.scope["query_string"].decode("latin-1").split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if "%" in part or "+" in part:
            key, value = unquote_plus(key), unquote_plus(value)
        params[key] = value
    return [params.get(name, "") for name in names]


def add_callback_routes(app: FastAPI) -> None:
    """Register GET and POST `/wecom/callback` on the app itself.

    Directly on the app rather than through `include_router`: an included router is matched twice
    per request (FastAPI re-resolves its candidates), a cost every callback would pay.
    """

    @app.get("/wecom/callback")
    async def verify_url(request: Request) -> Response:
        """wecom-api §1.4: answer the decrypted echostr, bare (no quotes, BOM or newline)."""
        receiver = _receiver(request)
        msg_signature, timestamp, nonce, echostr = _query(
            request, "msg_signature", "timestamp", "nonce", "echostr"
        )
        if receiver.crypto is None:
            return await receiver.refuse("not_configured", 404, NOT_CONFIGURED)
        if not (msg_signature and timestamp and nonce and echostr):
            return await receiver.refuse(
                "url_refused", 400, "缺少 msg_signature/timestamp/nonce/echostr / missing query parameters"
            )
        problem = _timestamp_problem(timestamp)
        if problem is not None:
            return await receiver.refuse("url_refused", 400, problem)
        try:
            plain = receiver.crypto.verify_url(msg_signature, timestamp, nonce, echostr)
        except CallbackCryptoError as exc:
            return await receiver.refuse("url_refused", _status_for(exc), exc.message)
        problem = _stale(timestamp)
        if problem is not None:
            return await receiver.refuse("url_refused", 400, problem)
        log.info("回调 URL 验证成功 / callback URL verified", extra={"decision": "url_verified"})
        return Response(plain, media_type="text/plain")

    @app.post("/wecom/callback")
    async def receive(request: Request) -> Response:
        receiver = _receiver(request)
        msg_signature, timestamp, nonce = _query(request, "msg_signature", "timestamp", "nonce")
        if receiver.crypto is None:
            return await receiver.refuse("not_configured", 404, NOT_CONFIGURED)
        if not (msg_signature and timestamp and nonce):
            return await receiver.refuse(
                "malformed", 400, "缺少 msg_signature/timestamp/nonce / missing query parameters"
            )
        problem = _timestamp_problem(timestamp)
        if problem is not None:
            return await receiver.refuse("malformed", 400, problem)
        try:
            body = await _read_body(request)
        except BodyTooLarge:
            return await receiver.refuse(
                "oversized", 413, f"请求体超过 {MAX_BODY_BYTES} 字节 / body larger than 1 MiB"
            )
        except TimeoutError:
            return await receiver.refuse(
                "slow",
                408,
                f"请求体 {BODY_READ_TIMEOUT:g} 秒内未发完 / the body did not arrive within {BODY_READ_TIMEOUT:g} s",
            )
        except ClientDisconnect:
            return await receiver.refuse(
                "disconnected",
                400,
                "请求未发完连接就断开了 / the client disconnected before sending the body",
            )
        try:
            fields = receiver.crypto.decrypt_callback(msg_signature, timestamp, nonce, body)
        except CallbackCryptoError as exc:
            return await receiver.refuse(_outcome_for(exc), _status_for(exc), exc.message)
        problem = _stale(timestamp)
        if problem is not None:
            return await receiver.refuse("stale", 400, problem)
        event = fields.get("Event", "")
        if fields.get("MsgType") != "event" or event != KF_EVENT:
            # Another app's callback on this URL: acknowledged, so WeCom does not repeat it.
            log.info("忽略非微信客服回调 / ignored a non-kf callback: %s/%s", fields.get("MsgType"), event)
            await receiver.count("ignored")
            return PlainTextResponse("success")
        open_kfid = fields.get("OpenKfId", "")
        token = fields.get("Token", "")
        raw_time = fields.get("CreateTime", "0") or "0"
        # Every field is checked against what the event table stores before the write: one value the
        # database refuses would otherwise fail the batch it is written with.
        if not (raw_time.isascii() and raw_time.isdigit()) or int(raw_time) > MAX_CREATE_TIME:
            return await receiver.refuse(
                "malformed", 400, "CreateTime 不是合理的 Unix 时间 / CreateTime is not a unix time"
            )
        if len(open_kfid) > MAX_ID_CHARS or len(token) > MAX_ID_CHARS:
            return await receiver.refuse(
                "malformed", 400, f"OpenKfId 或 Token 超过 {MAX_ID_CHARS} 个字符 / OpenKfId or Token too long"
            )
        create_time = int(raw_time)
        try:
            is_new, sync_queued = await receiver.record(open_kfid, token, create_time)
        except (psycopg.OperationalError, ConnectorException) as exc:
            return await receiver.unavailable(exc)
        if not receiver.known(open_kfid):
            log.warning(
                "未知客服账号的回调，已记录但不同步 / callback for an unknown kf account %r: recorded, not synced "
                "(KF_ACCOUNTS)",
                open_kfid,
                extra={"decision": "unknown_account"},
            )
            return PlainTextResponse("success")
        # Deferred on repeats too: if we crashed between recording and deferring, the repeat heals it.
        if not sync_queued:
            try:
                await receiver.defer_sync(open_kfid, token)
            except (psycopg.OperationalError, ConnectorException) as exc:
                return await receiver.unavailable(exc)
        if not is_new:
            log.info("重复回调 / repeated callback for %s", open_kfid, extra={"decision": "callback_repeat"})
        return PlainTextResponse("success")
