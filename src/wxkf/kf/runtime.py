"""The pipeline's resources and the worker's lifecycle.

`Pipeline` holds what the jobs and the callback route share — settings, one psycopg pool (also
procrastinate's), the procrastinate app, and, for workers, the WeCom client and the responder.
Open it with `async with Pipeline(settings, conninfo) as pipeline:`.

`run_worker()` runs the procrastinate worker plus a recovery loop for crashes (kill -9):
jobs of a worker whose heartbeat stopped are put back in the queue, and conversations with work but
no job (a crash between commit and defer) get a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import procrastinate
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from wxkf.config import Settings
from wxkf.kf import jobs, ledger, media_jobs
from wxkf.kf.accounts import AccountDirectory
from wxkf.kf.outbox import OutboxKind, enqueue_texts
from wxkf.kf.responder import Conversation, Responder
from wxkf.kf.service_state import SessionStates
from wxkf.media.inbound import InboundMedia
from wxkf.media.storage import MediaStore, media_store
from wxkf.media.uploads import UploadCache
from wxkf.wecom.client import WeComClient
from wxkf.wecom.tokens import PostgresTokenStore

log = logging.getLogger("wxkf.kf.worker")

HEARTBEAT_SECONDS = 1.0


async def _autocommit(conn: AsyncConnection[Any]) -> None:
    # Set per connection, not in the pool's kwargs: procrastinate reuses those kwargs for its
    # LISTEN connection and adds autocommit itself.
    await conn.set_autocommit(True)


class PipelineNotConfigured(RuntimeError):
    """The WeCom settings the worker needs are missing."""


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        conninfo: str,
        *,
        client: WeComClient | None = None,
        responder: Responder | None = None,
        pool_size: int = 10,
    ) -> None:
        self.settings = settings
        self.conninfo = conninfo
        self._client = client
        self._owns_client = client is None
        if client is not None and client.on_api_error is None:
            client.on_api_error = self.count_api_error
        self._responder = responder
        # Autocommit: a single statement needs no BEGIN/COMMIT round trips; every multi-statement
        # change in the pipeline runs in an explicit `conn.transaction()`.
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo, min_size=1, max_size=pool_size, open=False, configure=_autocommit
        )
        self.procrastinate = procrastinate.App(connector=procrastinate.PsycopgConnector())
        jobs.register_tasks(self.procrastinate)
        media_jobs.register_tasks(self.procrastinate)
        self._states: SessionStates | None = None
        self._media_store: MediaStore | None = None
        self._media: InboundMedia | None = None
        self._uploads: UploadCache | None = None
        self.accounts = AccountDirectory(self.pool, settings)

    async def open(self) -> None:
        await self.pool.open(wait=True)
        await self.procrastinate.open_async(pool=self.pool)

    async def close(self) -> None:
        if self._media_store is not None:
            await self._media_store.aclose()
        await self.procrastinate.close_async()
        await self.pool.close()
        if self._owns_client and self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- what the jobs use (built on first use: the web process needs none of it) -----------------

    @property
    def client(self) -> WeComClient:
        if self._client is None:
            secret = self.settings.wecom_kf_secret
            if not self.settings.wecom_corp_id or secret is None or not secret.get_secret_value():
                raise PipelineNotConfigured(
                    "缺少 WECOM_CORP_ID / WECOM_KF_SECRET（微信客服的 Secret），无法拉取和发送消息 / "
                    "set WECOM_CORP_ID and WECOM_KF_SECRET to sync and send kf messages"
                )
            self._client = WeComClient(
                self.settings.wecom_api_base,
                self.settings.wecom_corp_id,
                secret,
                token_store=PostgresTokenStore(self.conninfo),
                on_api_error=self.count_api_error,
            )
        return self._client

    async def count_api_error(self, api: str, errcode: int) -> None:
        """The client's `on_api_error` hook: every errcode WeCom answers, shared by all processes
        through `kf_counters` (`wecom.errcode.<api>.<errcode>`, read by /metrics)."""
        async with self.pool.connection() as conn:
            await ledger.count(conn, f"wecom.errcode.{api}.{errcode}")

    def use_responder(self, responder: Responder) -> None:
        """Answer with `responder` from now on (the service plugs the agent in here)."""
        self._responder = responder

    @property
    def responder(self) -> Responder:
        if self._responder is None:
            raise RuntimeError(
                "流水线没有应答器：由 wxkf.service 接入智能体 / no responder: wxkf.service plugs the agent in"
            )
        return self._responder

    @property
    def media_store(self) -> MediaStore:
        """Where media bytes are kept (MEDIA_STORE)."""
        if self._media_store is None:
            self._media_store = media_store(self.settings, self.pool)
        return self._media_store

    @property
    def media(self) -> InboundMedia:
        """Customers' media: media/get into the media store (wecom-api §3, §8)."""
        if self._media is None:
            self._media = InboundMedia(
                self.pool, self.client, self.media_store, max_bytes=self.settings.media_max_bytes
            )
        return self._media

    @property
    def uploads(self) -> UploadCache:
        """media/upload for outbound media, reused while the media_id lives (wecom-api §8)."""
        if self._uploads is None:
            self._uploads = UploadCache(self.pool, self.client, self.media_store)
        return self._uploads

    @property
    def states(self) -> SessionStates:
        if self._states is None:
            self._states = SessionStates(self.client, self.pool)
        return self._states

    # --- sending from elsewhere (push, tools, contact) ----------------------------------------------

    async def queue_texts(
        self, conversation: Conversation, texts: Sequence[str], *, kind: OutboxKind, source: str
    ) -> list[str]:
        """Send `texts` to a kf customer through the budget and the outbox; returns the msgids queued.

        Fewer than `texts` when the 48 h / 5 budget runs out (wecom-api §4); the conversation job
        sends them in order, with retries. `source` makes the msgids deterministic: queueing the same
        (kind, source) twice sends once.
        """
        async with self.pool.connection() as conn, conn.transaction():
            msgids = await enqueue_texts(conn, conversation, texts, kind=kind, source=source)
        if msgids:
            await jobs.defer_converse(self.procrastinate, conversation)
        return msgids

    # --- the worker ------------------------------------------------------------------------------

    async def run_worker(
        self,
        *,
        concurrency: int | None = None,
        stalled_after: float = 10.0,
        install_signal_handlers: bool = False,
    ) -> None:
        """Run jobs until cancelled (or a signal when `install_signal_handlers`)."""
        recovery = asyncio.create_task(self._recovery_loop(stalled_after))
        try:
            await self.procrastinate.run_worker_async(
                concurrency=concurrency or self.settings.kf_worker_concurrency,
                fetch_job_polling_interval=self.settings.kf_poll_interval_seconds,
                listen_notify=True,
                install_signal_handlers=install_signal_handlers,
                additional_context=jobs.worker_context(self),
                update_heartbeat_interval=HEARTBEAT_SECONDS,
                stalled_worker_timeout=stalled_after,
                shutdown_graceful_timeout=5.0,
                delete_jobs="successful",
            )
        finally:
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovery

    async def _recovery_loop(self, stalled_after: float) -> None:
        first = True
        while True:
            try:
                await self.recover(stalled_after, min_age=0.0 if first else 30.0)
                first = False
            except Exception:  # the loop must outlive a database hiccup
                log.exception("恢复检查失败 / recovery check failed")
            await asyncio.sleep(max(stalled_after / 2, 0.5))

    async def recover(self, stalled_after: float, min_age: float = 30.0) -> int:
        """Requeue jobs of dead workers; give a job to conversations with old, unhandled work."""
        manager = self.procrastinate.job_manager
        requeued = 0
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
            await manager.retry_job(job)
            requeued += 1
            log.warning(
                "任务所在的 worker 已停止心跳，重新排队 / requeued job %s (%s) of a dead worker",
                job.id,
                job.task_name,
                extra={"decision": "job_requeued"},
            )
        async with self.pool.connection() as conn:
            orphans = await ledger.conversations_with_work(conn, older_than=min_age)
        for conversation in orphans:
            await jobs.defer_converse(self.procrastinate, conversation)
        return requeued
