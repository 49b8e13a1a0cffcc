"""The pipeline's procrastinate jobs, and how to defer them.

* `kf:sync_account` — one per kf account at a time (`lock`), coalesced while queued
  (`queueing_lock`): ten callbacks in a burst make one queued sync, not ten.
* `kf:converse` — one per conversation at a time, coalesced the same way. A conversation never
  builds a backlog of jobs on its lock (DESIGN.md measured why): one job drains all its messages.
* `kf:queue_timeout` — scheduled at a handoff to the queue (`wxkf.kf.handoff`).

A queued job that already exists is success (`AlreadyEnqueued`): the queued one will see the new
messages, because it has not started yet.
"""

from __future__ import annotations

import contextlib
import logging
from asyncio import CancelledError
from typing import TYPE_CHECKING, Any

import procrastinate
import psycopg
from procrastinate import BaseRetryStrategy, JobContext, RetryDecision
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException
from procrastinate.jobs import Job, JobDeferrer

from wxkf.kf import handoff
from wxkf.kf.conversation import ConcurrentUpdate, converse
from wxkf.kf.responder import Conversation
from wxkf.kf.service_state import record_api_error
from wxkf.kf.sync import sync_account
from wxkf.media.errors import MediaStoreError
from wxkf.ops.logging import log_context
from wxkf.wecom.errors import APIError, retry_later

if TYPE_CHECKING:
    from wxkf.kf.runtime import Pipeline

log = logging.getLogger("wxkf.kf.jobs")

SYNC_TASK = "kf:sync_account"
CONVERSE_TASK = "kf:converse"


class PipelineRetry(BaseRetryStrategy):
    """Which failures of a pipeline job are retried, and after how long.

    * What WeCom may accept later (`retry_later`: throttling 45009/45033/-1, no answer, a token
      revoked again and again; the client already retried a few times within one call): 2, 4, 8,
      16 s, then every 30 s. Never longer: a sync job waiting out
      a long backoff is the one every new callback finds queued, so it holds up every customer of
      its account.
    * An unreachable media store (`MediaStoreError`): the same backoff.
    * A database that went away, and a job cut short by a worker's shutdown (`CancelledError` once
      the graceful wait is over: procrastinate retries such a job only if its strategy says so):
      1 s. The database is back by then or the job fails again at once; waiting longer helps nobody.

    Every job drains only what is still pending, so running it again after a partial attempt
    repeats nothing. `attempts` also counts requeues after a crash.
    """

    INTERRUPTED = (psycopg.OperationalError, ConnectorException, CancelledError)
    MAX_ATTEMPTS = 12
    MAX_WAIT_SECONDS = 30

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if job.attempts >= self.MAX_ATTEMPTS:
            return None
        if isinstance(exception, self.INTERRUPTED):
            return RetryDecision(retry_in={"seconds": 1})
        if retry_later(exception) or isinstance(exception, MediaStoreError):
            return RetryDecision(retry_in={"seconds": min(2 ** (job.attempts + 1), self.MAX_WAIT_SECONDS)})
        return None


RETRY = PipelineRetry()

NO_SUCH_ACCOUNT = frozenset({95000, 95004})  # wecom-api §7.1: 不合法的 open_kfid / open_kfid不存在
_REFUSED = """
INSERT INTO kf_sync_refusals (open_kfid, errcode) VALUES (%s, %s)
ON CONFLICT (open_kfid) DO UPDATE SET errcode = EXCLUDED.errcode, refused_at = now()
"""


def _pipeline(context: JobContext) -> Pipeline:
    pipeline: Pipeline = context.additional_context["pipeline"]
    return pipeline


async def sync_account_job(context: JobContext, open_kfid: str, token: str = "") -> None:
    pipeline = _pipeline(context)
    with log_context(open_kfid=open_kfid):
        try:
            touched = await sync_account(pipeline, open_kfid, token or None)
        except APIError as exc:
            if retry_later(exc):
                raise  # retried with backoff
            # Retrying cannot help (permissions, IP whitelist, a wrong open_kfid): one line with the
            # fix, counted; the next callback tries again. An account WeCom says does not exist is
            # left out of the sync sweep until then, so it is not tried (and warned of) for good.
            await record_api_error(pipeline.pool, exc, Conversation(open_kfid, "-"), "拉取消息 / kf/sync_msg")
            if exc.errcode in NO_SUCH_ACCOUNT:
                async with pipeline.pool.connection() as conn:
                    await conn.execute(_REFUSED, (open_kfid, exc.errcode))
            return
    await defer_conversations(pipeline, sorted(touched, key=lambda c: c.external_userid))


async def converse_job(context: JobContext, open_kfid: str, external_userid: str) -> None:
    conversation = Conversation(open_kfid, external_userid)
    pipeline = _pipeline(context)
    try:
        await converse(pipeline, conversation)
    except ConcurrentUpdate:
        # Two jobs of one conversation ran at once (a worker thought dead was not): the other one
        # answered part of this batch. What it left pending gets a job of its own, at once.
        log.info("另一个进程已处理这些消息 / another worker answered these messages first")
        await defer_converse(pipeline.procrastinate, conversation)


SYNC_LOCK_PREFIX = "kf-sync"
CONVERSE_LOCK_PREFIX = "kf-conv"


def _key(*parts: str) -> str:
    return ":".join(parts)  # `concat_ws(':', …)` in the recovery's SQL


def sync_lock(open_kfid: str) -> str:
    """The lock and queueing lock of an account's sync job."""
    return _key(SYNC_LOCK_PREFIX, open_kfid)


async def defer_sync(app: procrastinate.App, open_kfid: str, token: str = "") -> None:
    lock = sync_lock(open_kfid)
    with contextlib.suppress(AlreadyEnqueued):
        await app.configure_task(SYNC_TASK, lock=lock, queueing_lock=lock).defer_async(
            open_kfid=open_kfid, token=token
        )


def _converse_lock(conversation: Conversation) -> str:
    """The lock and queueing lock of a conversation's job."""
    return _key(CONVERSE_LOCK_PREFIX, conversation.open_kfid, conversation.external_userid)


def _converse_deferrer(app: procrastinate.App, conversation: Conversation) -> JobDeferrer:
    lock = _converse_lock(conversation)
    return app.configure_task(CONVERSE_TASK, lock=lock, queueing_lock=lock)


def _converse_kwargs(conversation: Conversation) -> dict[str, str]:
    return {"open_kfid": conversation.open_kfid, "external_userid": conversation.external_userid}


async def defer_converse(app: procrastinate.App, conversation: Conversation) -> bool:
    """Make sure a conversation job will run after now (e.g. after writing outbox rows).

    True when a job was queued; False when one was already queued (it has not started, so it will
    see what is new)."""
    try:
        await _converse_deferrer(app, conversation).defer_async(**_converse_kwargs(conversation))
    except AlreadyEnqueued:
        return False
    return True


DEFER_BATCH = 50
ANALYZE_AFTER = 100  # jobs queued at once that make the job table's statistics stale

_QUEUED_LOCKS = (
    "SELECT queueing_lock FROM procrastinate_jobs WHERE status = 'todo' AND queueing_lock = ANY(%s)"
)


async def defer_conversations(pipeline: Pipeline, conversations: list[Conversation]) -> int:
    """`defer_converse` for each conversation, DEFER_BATCH to a statement; returns the jobs queued.

    A sync page touches up to a thousand conversations; one statement each was a quarter of the
    worker's CPU. Conversations whose job is already queued (a backlog: the sync hands over every
    conversation with pending work) are left out first. A batch fails whole when one of its
    conversations got a job queued since (`AlreadyEnqueued`), and is then deferred one by one.

    After a burst the job table's statistics are refreshed at once. procrastinate's fetch is planned
    from them, and a table that the statistics still call empty gets a plan that checks every queued
    job's lock before taking the first: with a thousand queued jobs each fetch took several
    milliseconds of PostgreSQL CPU, and the fetches, one at a time, set the pace of the whole
    worker. autovacuum would refresh them too, but up to a minute later.
    """
    app = pipeline.procrastinate
    locks = {c: _converse_lock(c) for c in conversations}
    async with pipeline.pool.connection() as conn:
        cur = await conn.execute(_QUEUED_LOCKS, (list(locks.values()),))
        already = {row[0] for row in await cur.fetchall()}
    waiting = [c for c in conversations if locks[c] not in already]
    queued = 0
    for start in range(0, len(waiting), DEFER_BATCH):
        chunk = waiting[start : start + DEFER_BATCH]
        jobs = [_converse_deferrer(app, c).make_new_job(**_converse_kwargs(c)) for c in chunk]
        try:
            await app.job_manager.batch_defer_jobs_async(jobs)
            queued += len(jobs)
        except AlreadyEnqueued:
            for conversation in chunk:
                queued += await defer_converse(app, conversation)
    if queued >= ANALYZE_AFTER:
        await _refresh_job_statistics(pipeline)
    return queued


async def _refresh_job_statistics(pipeline: Pipeline) -> None:
    """ANALYZE the job table; a failure costs the speed-up, not the sync that queued the jobs."""
    try:
        async with pipeline.pool.connection() as conn:
            await conn.execute("ANALYZE procrastinate_jobs")
    except psycopg.Error as exc:
        log.warning("无法刷新任务表统计信息 / could not ANALYZE procrastinate_jobs: %s", type(exc).__name__)


def register_tasks(app: procrastinate.App) -> None:
    """Register the pipeline's tasks on a procrastinate app (one app per `Pipeline`)."""
    app.task(name=SYNC_TASK, pass_context=True, retry=RETRY)(sync_account_job)
    app.task(name=CONVERSE_TASK, pass_context=True, retry=RETRY)(converse_job)
    handoff.register(app, RETRY)


def worker_context(pipeline: Pipeline) -> dict[str, Any]:
    return {"pipeline": pipeline}
