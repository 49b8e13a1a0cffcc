"""`/wecom/callback`: URL verification (GET) and the kf_msg_or_event callback (POST), wecom-api §1, §2.

The POST does the least that makes the callback durable — verify, decrypt, record (deduplicated),
defer a sync job — and answers 200 "success" in milliseconds; sync_msg runs in the worker. WeCom
repeats a callback it thinks failed (§1.7); a repeat changes nothing but a delivery counter.

Bad input gets a 4xx and one log line with the reason, and nothing is recorded: bad signature or
wrong corp id → 403, malformed XML or ciphertext → 400, a body over 1 MiB → 413 (checked from
Content-Length and while reading, before decrypting anything). Never a 5xx for bad input.

Each refusal adds one to `kf.callback.<outcome>` in `kf_counters` (exported as
`wxkf_callbacks_total{outcome}`), and nothing else is written: bad_signature, wrong_corp_id,
malformed, oversized, disconnected, not_configured, and url_refused for a failed URL verification.
A non-kf callback on this URL is acknowledged and counted as `ignored`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response
from psycopg_pool import AsyncConnectionPool
from starlette.requests import ClientDisconnect

from wxkf.config import Settings
from wxkf.kf import ledger
from wxkf.kf.jobs import defer_sync, sync_lock
from wxkf.kf.runtime import Pipeline
from wxkf.wecom.crypto import CallbackCrypto
from wxkf.wecom.errors import CallbackCryptoError, CorpIdMismatchError, InvalidSignatureError

log = logging.getLogger("wxkf.kf.callback")

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a real envelope is well under 4 KiB
KF_EVENT = "kf_msg_or_event"  # wecom-api §2
NOT_CONFIGURED = "回调未配置：设置 WECOM_TOKEN、WECOM_AES_KEY、WECOM_CORP_ID / callback not configured"


class BodyTooLarge(Exception):
    """The body is over MAX_BODY_BYTES (control flow inside this module)."""


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
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


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
        self.accounts = frozenset(a.strip() for a in settings.kf_accounts.split(",") if a.strip())
        self._pool: AsyncConnectionPool[Any] = pipeline.pool
        self._pipeline = pipeline
        self._deferring: dict[str, asyncio.Future[None]] = {}

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

    def known(self, open_kfid: str) -> bool:
        return bool(open_kfid) and (not self.accounts or open_kfid in self.accounts)

    async def record(self, open_kfid: str, token: str, create_time: int) -> tuple[bool, bool]:
        """Store the event in one round trip: (is it new, is a sync of the account already queued).

        A queued (`todo`) sync has not started, so it will read everything WeCom had when this
        callback was sent: deferring another would only hit its queueing lock. Reading
        procrastinate's table here saves that second round trip on every callback of a burst.
        """
        known = self.known(open_kfid)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                WITH event AS (
                    INSERT INTO kf_callback_events (open_kfid, token, create_time, known_account)
                    VALUES (%s, %s, %s, %s)
                    ON CONFLICT (open_kfid, token, create_time)
                    DO UPDATE SET deliveries = kf_callback_events.deliveries + 1
                    RETURNING deliveries = 1 AS is_new
                )
                SELECT (SELECT is_new FROM event),
                       EXISTS (SELECT 1 FROM procrastinate_jobs WHERE queueing_lock = %s AND status = 'todo')
                """,
                (open_kfid, token, create_time, known, sync_lock(open_kfid)),
            )
            row = await cur.fetchone()
        return (bool(row and row[0]), bool(row and row[1]))

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


Receiver = Annotated[CallbackReceiver, Depends(_receiver)]


def callback_router() -> APIRouter:
    router = APIRouter()

    @router.get("/wecom/callback")
    async def verify_url(
        receiver: Receiver,
        msg_signature: Annotated[str, Query()] = "",
        timestamp: Annotated[str, Query()] = "",
        nonce: Annotated[str, Query()] = "",
        echostr: Annotated[str, Query()] = "",
    ) -> Response:
        """wecom-api §1.4: answer the decrypted echostr, bare (no quotes, BOM or newline)."""
        if receiver.crypto is None:
            return await receiver.refuse("not_configured", 404, NOT_CONFIGURED)
        if not (msg_signature and timestamp and nonce and echostr):
            return await receiver.refuse(
                "url_refused", 400, "缺少 msg_signature/timestamp/nonce/echostr / missing query parameters"
            )
        try:
            plain = receiver.crypto.verify_url(msg_signature, timestamp, nonce, echostr)
        except CallbackCryptoError as exc:
            return await receiver.refuse("url_refused", _status_for(exc), exc.message)
        log.info("回调 URL 验证成功 / callback URL verified", extra={"decision": "url_verified"})
        return Response(plain, media_type="text/plain")

    @router.post("/wecom/callback")
    async def receive(
        request: Request,
        receiver: Receiver,
        msg_signature: Annotated[str, Query()] = "",
        timestamp: Annotated[str, Query()] = "",
        nonce: Annotated[str, Query()] = "",
    ) -> Response:
        if receiver.crypto is None:
            return await receiver.refuse("not_configured", 404, NOT_CONFIGURED)
        if not (msg_signature and timestamp and nonce):
            return await receiver.refuse(
                "malformed", 400, "缺少 msg_signature/timestamp/nonce / missing query parameters"
            )
        try:
            body = await _read_body(request)
        except BodyTooLarge:
            return await receiver.refuse(
                "oversized", 413, f"请求体超过 {MAX_BODY_BYTES} 字节 / body larger than 1 MiB"
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
        event = fields.get("Event", "")
        if fields.get("MsgType") != "event" or event != KF_EVENT:
            # Another app's callback on this URL: acknowledged, so WeCom does not repeat it.
            log.info("忽略非微信客服回调 / ignored a non-kf callback: %s/%s", fields.get("MsgType"), event)
            await receiver.count("ignored")
            return PlainTextResponse("success")
        open_kfid = fields.get("OpenKfId", "")
        token = fields.get("Token", "")
        try:
            create_time = int(fields.get("CreateTime", "0") or 0)
        except ValueError:
            return await receiver.refuse(
                "malformed", 400, "CreateTime 不是整数 / CreateTime is not an integer"
            )
        is_new, sync_queued = await receiver.record(open_kfid, token, create_time)
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
            await receiver.defer_sync(open_kfid, token)
        if not is_new:
            log.info("重复回调 / repeated callback for %s", open_kfid, extra={"decision": "callback_repeat"})
        return PlainTextResponse("success")

    return router
