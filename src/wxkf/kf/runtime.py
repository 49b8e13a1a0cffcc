"""The pipeline's resources and the worker's lifecycle.

`Pipeline` holds what the jobs and the callback route share — settings, the process's psycopg pool
(`Database.pool`, also procrastinate's), the procrastinate app, and, for workers, the WeCom client
and the responder. Open it with `async with Pipeline(settings, database) as pipeline:`; the
database's owner closes the pool.

`run_worker()` runs the procrastinate worker, restarted when the database went away, plus a recovery
loop for crashes (kill -9, `wxkf.kf.recovery`): jobs of a worker whose heartbeat stopped are put back
in the queue, work that no job will do gets a job, and accounts not synced for a while are synced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

import procrastinate
import psycopg
from procrastinate import JobContext
from procrastinate.exceptions import ConnectorException
from procrastinate.worker import Worker
from psycopg import AsyncConnection

from wxkf.config import Settings
from wxkf.db.engine import Database, Pool, application_name
from wxkf.kf import jobs, ledger, media_jobs, recovery
from wxkf.kf.accounts import AccountDirectory
from wxkf.kf.outbox import OutboxKind, enqueue_texts
from wxkf.kf.responder import Conversation, Responder
from wxkf.kf.service_state import SessionStates
from wxkf.media.inbound import InboundMedia
from wxkf.media.storage import MediaStore, media_store
from wxkf.media.uploads import UploadCache
from wxkf.ops import retention
from wxkf.wecom.client import WeComClient
from wxkf.wecom.tokens import PostgresTokenStore

log = logging.getLogger("wxkf.kf.worker")

HEARTBEAT_SECONDS = 1.0
LISTEN_ROLE = "wxkf-listen"  # application_name of the worker's LISTEN connection
# A worker whose heartbeat is this old is not running (/ready, metrics): a few missed beats, not a minute.
WORKER_SILENT_SECONDS = 5 * HEARTBEAT_SECONDS
GRACEFUL_SECONDS = 5.0  # a stopping worker lets running jobs finish this long, then aborts them
SHUTDOWN_SECONDS = 15.0  # a stop never takes longer than this, whatever the database does
OUTAGE_BACKOFF = (0.5, 10.0)  # seconds between database checks while it is away: first, at most
DETACHED_ONLY = 1e9  # seconds of silence no live worker reaches: only jobs of unregistered workers


async def _name_listener(conn: AsyncConnection[Any]) -> None:
    # procrastinate opens its LISTEN connection beside the pool, with the pool's settings, and runs
    # the connector's `configure` on it: named apart from the pool's in pg_stat_activity.
    await conn.execute("SELECT set_config('application_name', %s, false)", (application_name(LISTEN_ROLE),))


class PipelineNotConfigured(RuntimeError):
    """The WeCom settings the worker needs are missing."""


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        client: WeComClient | None = None,
        responder: Responder | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.conninfo = database.conninfo
        self._client = client
        self._owns_client = client is None
        if client is not None and client.on_api_error is None:
            client.on_api_error = self.count_api_error
        self._responder = responder
        # Autocommit (`Database.pool`): a single statement needs no BEGIN/COMMIT round trips; every
        # multi-statement change in the pipeline runs in an explicit `conn.transaction()`.
        self.pool: Pool = database.pool
        self.procrastinate = procrastinate.App(
            connector=procrastinate.PsycopgConnector(configure=_name_listener)
        )
        jobs.register_tasks(self.procrastinate)
        media_jobs.register_tasks(self.procrastinate)
        retention.register_task(self.procrastinate, settings)
        self._states: SessionStates | None = None
        self._media_store: MediaStore | None = None
        self._media: InboundMedia | None = None
        self._uploads: UploadCache | None = None
        self.accounts = AccountDirectory(self.pool, settings)
        self._worker: Worker | None = None  # procrastinate's worker while it runs (for recovery)
        self._running: set[int] = set()  # ids of the jobs this process is running now

    async def open(self) -> None:
        await self.procrastinate.open_async(pool=self.pool)

    async def close(self) -> None:
        if self._media_store is not None:
            await self._media_store.aclose()
        await self.procrastinate.close_async()
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
                token_store=PostgresTokenStore(self.pool),
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
            margin = timedelta(hours=self.settings.media_refresh_margin_hours)
            self._uploads = UploadCache(self.pool, self.client, self.media_store, margin=margin)
        return self._uploads

    @property
    def states(self) -> SessionStates:
        if self._states is None:
            self._states = SessionStates(
                self.client, self.pool, timedelta(minutes=self.settings.kf_pause_minutes)
            )
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
        """Run jobs until cancelled (or SIGTERM / SIGINT when `install_signal_handlers`).

        The database may go away (a restart, a failover, the network): procrastinate's worker then
        stops, and it is started again, with backoff, once the database answers. A stop request is
        honoured within SHUTDOWN_SECONDS, outage or not.
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if install_signal_handlers else ()
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        recovery = asyncio.create_task(self._recovery_loop(stalled_after))
        try:
            await self._supervise(concurrency or self.settings.kf_worker_concurrency, stalled_after, stop)
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovery

    async def _supervise(self, concurrency: int, stalled_after: float, stop: asyncio.Event) -> None:
        """procrastinate's worker, restarted whenever it stops without being asked to."""
        while True:
            worker = Worker(
                self.procrastinate,
                concurrency=concurrency,
                fetch_job_polling_interval=self.settings.kf_poll_interval_seconds,
                listen_notify=True,
                install_signal_handlers=False,  # ours: a stop must also end an outage's wait
                additional_context=jobs.worker_context(self),
                update_heartbeat_interval=HEARTBEAT_SECONDS,
                stalled_worker_timeout=stalled_after,
                shutdown_graceful_timeout=GRACEFUL_SECONDS,
                delete_jobs="successful",
                worker_middleware=[self._track_running],
            )
            self._worker = worker
            running = asyncio.create_task(worker.run(), name="wxkf-worker")  # type: ignore[no-untyped-call]
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                await _stop_worker(running)
                raise
            finally:
                stopping.cancel()
            if stop.is_set():
                await _stop_worker(running)
                return
            error = running.exception()
            log.warning(
                "worker 已停止（%s），等待数据库恢复后重新启动 / the worker stopped (%s); it restarts "
                "once the database answers",
                _describe(error),
                _describe(error),
                extra={"decision": "worker_restart"},
            )
            if not await self._wait_for_database(stop):
                return
            await self.pool.check()  # connections the outage broke are replaced, not handed to jobs
            await self._release_jobs_of(worker)

    async def _track_running(
        self, call_next: Callable[[], Awaitable[Any]], context: JobContext, worker: Any
    ) -> Any:
        """procrastinate worker middleware: which jobs this process runs (`recovery.StrandedJobs`)."""
        job_id = context.job.id
        if job_id is not None:
            self._running.add(job_id)
        try:
            return await call_next()
        finally:
            if job_id is not None:
                self._running.discard(job_id)

    async def _wait_for_database(self, stop: asyncio.Event) -> bool:
        """Poll the database with backoff until it answers (True) or a stop is requested (False)."""
        delay = OUTAGE_BACKOFF[0]
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, connect_timeout=5) as conn:
                    await conn.execute("SELECT 1")
                log.info("数据库已恢复，worker 重新启动 / the database answers again; restarting the worker")
                return True
            except (psycopg.Error, OSError) as exc:
                log.warning("数据库仍不可用 / the database is still unavailable: %s", _describe(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, OUTAGE_BACKOFF[1])
        return False

    async def _release_jobs_of(self, worker: Worker) -> None:
        """The stopped worker's jobs are dead (it aborted what it still ran), yet `doing`: requeue them now.

        Unregistering its row detaches its jobs (`worker_id` becomes NULL), which `get_stalled_jobs`
        returns at once, instead of after its heartbeat has been silent for `stalled_after`.
        """
        if worker.worker_id is None:  # it unregistered itself: nothing of it is left
            return
        try:
            await self.procrastinate.job_manager.unregister_worker(worker.worker_id)
            await recovery.settle_stalled_jobs(self, stalled_after=DETACHED_ONLY)
        except (ConnectorException, psycopg.Error) as exc:
            log.warning("无法立即重新排队旧任务 / could not requeue the old jobs yet: %s", _describe(exc))

    async def _recovery_loop(self, stalled_after: float) -> None:
        sweep = recovery.SyncSweep(self.settings.kf_sync_sweep_seconds)
        stranded = recovery.StrandedJobs()
        while True:
            try:
                worker_id = self._worker.worker_id if self._worker is not None else None
                await stranded.settle(self, worker_id, set(self._running))
                await self.recover(stalled_after, sweep=sweep)
            except (ConnectorException, psycopg.Error, OSError) as exc:
                # The loop must outlive a database outage; it tries again at the next pass.
                log.warning("恢复检查失败 / recovery check failed: %s", _describe(exc))
            except Exception:
                log.exception("恢复检查失败 / recovery check failed")
            await asyncio.sleep(max(stalled_after / 2, 0.5))

    async def recover(self, stalled_after: float, *, sweep: recovery.SyncSweep | None = None) -> int:
        """One recovery pass (`wxkf.kf.recovery`): settle dead workers' jobs, give orphaned work a
        job, and sync accounts that are due; returns the jobs settled."""
        settled = await recovery.settle_stalled_jobs(self, stalled_after)
        await recovery.defer_orphaned_conversations(self)
        if sweep is not None:
            await sweep.run(self)
        return settled


async def _stop_worker(running: asyncio.Task[None]) -> None:
    """Stop procrastinate's worker gracefully (it waits GRACEFUL_SECONDS for running jobs, then aborts
    them), but never wait longer than SHUTDOWN_SECONDS: a database outage can hang its last writes."""
    running.cancel()
    try:
        async with asyncio.timeout(SHUTDOWN_SECONDS):
            await running
    except (asyncio.CancelledError, TimeoutError):
        pass
    except Exception as exc:  # its last writes failed (the database is down): nothing more to do
        log.warning("worker 停止时出错 / the worker stopped with an error: %s", _describe(exc))


def _describe(exc: BaseException | None) -> str:
    """The error in one line, without a traceback (an outage is an expected event here)."""
    if exc is None:
        return "no error"
    cause = exc.__cause__ or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
