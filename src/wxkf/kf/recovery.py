"""Crash recovery: from whatever a dead worker left behind, the queue converges to one runnable job per key.

What procrastinate guarantees, and what a `kill -9` leaves (procrastinate's `schema.sql`):

* a `doing` job holds its `lock`: no other job of that lock is fetched while it is `doing`
  (`procrastinate_fetch_job_v2`), and only one job per lock can be `doing` (unique index);
* `queueing_lock` is unique among `todo` jobs only (`procrastinate_jobs_queueing_lock_idx_v1`), so
  while a conversation's job runs, a new message queues its successor: the coalescing of `jobs`;
* a worker killed mid-job leaves its job `doing` for good, with its lock; its heartbeat stops, and
  `get_stalled_jobs` finds the job (or, once the worker row was pruned, finds it by `worker_id IS NULL`);
* `retry_job` moves `doing` → `todo` and keeps the queueing lock, so when the successor is already
  queued the retry violates the unique index, and the dead job keeps the lock that its successor
  waits for: the conversation stalls for good.

So each stalled job is settled on its own (one failure never stops the pass), in one of two ways
that both leave exactly one runnable job for its key:

* no successor queued: `retry_job`, back to `todo` (attempts counted, procrastinate's own event);
* a successor already queued: the dead job is finished as `failed`, which frees the lock, and the
  successor does its work. Every pipeline job drains all pending work of its key (one sync pulls
  everything new, one conversation job answers every pending message), so the successor covers
  everything the dead job would have done.

A retry that another worker's recovery got to first fails harmlessly: the job is no longer `doing`.

A live worker can strand a job too. When a job ends, procrastinate's worker writes its outcome
(finish, or `retry_job` for a retryable error); when that write fails — the retry meets the queued
successor's unique index, or the database is away for a moment — the job stays `doing` under a
worker that is alive and beating, so no stall detection finds it, and it holds its lock for good.
Each worker therefore compares the jobs it runs with the jobs `doing` under its id, and settles
those it has not run for two passes in a row (an outcome being written takes milliseconds).

Two scans after that catch work that no job will do:

* conversations with a pending message or an unsent reply and no conversation job queued or
  running (a crash between a commit and its defer; a job that failed for good) get a job;
* accounts whose last sync is older than KF_SYNC_SWEEP_SECONDS, or that have callbacks but were
  never synced, get a sync: this is what answers messages whose callbacks WeCom gave up on while
  the service was down (wecom-api §1.7: three retries, then nothing).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from procrastinate.exceptions import ConnectorException, UniqueViolation
from procrastinate.jobs import Job, Status

from wxkf.kf import jobs, ledger
from wxkf.kf.responder import Conversation

if TYPE_CHECKING:
    from wxkf.kf.runtime import Pipeline

log = logging.getLogger("wxkf.kf.recovery")

ORPHAN_AFTER_SECONDS = 5.0  # a sync defers its conversations right after its commit; older work has no job

# `ledger.WORK` for which no conversation job is queued or running (it holds the conversation's lock).
_ORPHANED_CONVERSATIONS = f"""
SELECT work.open_kfid, work.external_userid FROM ({ledger.WORK}) AS work
WHERE NOT EXISTS (
    SELECT 1 FROM procrastinate_jobs
    WHERE lock = concat_ws(':', %(prefix)s::text, work.open_kfid, work.external_userid)
      AND status IN ('todo', 'doing')
)
"""

# Accounts to sync: synced before but not within the sweep interval, or seen in the newest callbacks
# and never synced; an account with a sync job queued or running needs none.
_ACCOUNTS_TO_SWEEP = """
WITH accounts AS (
    SELECT open_kfid, updated_at FROM kf_sync_cursors
    UNION ALL
    SELECT DISTINCT recent.open_kfid, NULL::timestamptz FROM (
        SELECT open_kfid, known_account FROM kf_callback_events ORDER BY id DESC LIMIT 1000
    ) AS recent
    WHERE recent.known_account
      AND NOT EXISTS (SELECT 1 FROM kf_sync_cursors c WHERE c.open_kfid = recent.open_kfid)
)
SELECT open_kfid FROM accounts
WHERE (updated_at IS NULL OR updated_at < now() - make_interval(secs => %(sweep)s))
  AND NOT EXISTS (
    -- WeCom said the account does not exist, and no callback for it came since.
    SELECT 1 FROM kf_sync_refusals r WHERE r.open_kfid = accounts.open_kfid AND r.refused_at >= coalesce((
        SELECT e.received_at FROM kf_callback_events e WHERE e.open_kfid = accounts.open_kfid
        ORDER BY e.id DESC LIMIT 1), '-infinity')
)
  AND NOT EXISTS (
    SELECT 1 FROM procrastinate_jobs
    WHERE lock = concat_ws(':', %(prefix)s::text, accounts.open_kfid) AND status IN ('todo', 'doing')
)
"""


async def settle_stalled_jobs(pipeline: Pipeline, stalled_after: float) -> int:
    """Put every job of a dead worker back in the queue, or retire it for its queued successor.

    Returns how many jobs were settled; a job that cannot be settled now is logged and left for the
    next pass.
    """
    manager = pipeline.procrastinate.job_manager
    settled = 0
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
        try:
            outcome = await _settle(pipeline, job)
        except ConnectorException as exc:
            # Another worker's recovery settled it first, or the database went away: next pass.
            log.warning(
                "无法处理停止心跳的任务 %s，下一轮再试 / could not settle job %s of a dead worker: %s",
                job.id,
                job.id,
                _reason(exc),
            )
            continue
        settled += 1
        log.warning(
            "任务所在的 worker 已停止心跳：%s / job %s (%s) of a dead worker: %s",
            outcome,
            job.id,
            job.task_name,
            outcome,
            extra={"decision": "job_requeued"},
        )
    return settled


class StrandedJobs:
    """Jobs `doing` under this process's live worker that it no longer runs (see the module docstring)."""

    def __init__(self) -> None:
        self._suspects: set[int] = set()

    async def settle(self, pipeline: Pipeline, worker_id: int | None, running: set[int]) -> int:
        """Settle the jobs stranded at this pass and the last; returns how many were settled."""
        if worker_id is None:
            self._suspects = set()
            return 0
        doing = await pipeline.procrastinate.job_manager.list_jobs_async(status="doing", worker_id=worker_id)
        stranded = {job.id: job for job in doing if job.id is not None and job.id not in running}
        settled = 0
        for job_id in sorted(stranded.keys() & self._suspects):
            job = stranded.pop(job_id)
            try:
                outcome = await _settle(pipeline, job)
            except ConnectorException as exc:
                log.warning(
                    "无法处理滞留的任务 %s / could not settle stranded job %s: %s",
                    job_id,
                    job_id,
                    _reason(exc),
                )
                continue
            settled += 1
            log.warning(
                "任务结束时未能写入结果，仍占着锁：%s / job %s (%s) ended but its outcome was never "
                "written: %s",
                outcome,
                job_id,
                job.task_name,
                outcome,
                extra={"decision": "job_requeued"},
            )
        self._suspects = set(stranded)
        return settled


async def _settle(pipeline: Pipeline, job: Job) -> str:
    manager = pipeline.procrastinate.job_manager
    try:
        await manager.retry_job(job)
        return "重新排队 / requeued"
    except UniqueViolation:
        # Its successor is queued under the same queueing lock: it does this job's work.
        await manager.finish_job(job, status=Status.FAILED, delete_job=False)
        return "已由排队中的后继任务接替 / retired, its queued successor does the work"


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    first = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {first[0]}" if first else type(cause).__name__


async def defer_orphaned_conversations(pipeline: Pipeline, older_than: float = ORPHAN_AFTER_SECONDS) -> int:
    """A conversation job for each conversation with work that no job will do; returns how many."""
    async with pipeline.pool.connection() as conn:
        cur = await conn.execute(
            _ORPHANED_CONVERSATIONS, {"k": None, "age": older_than, "prefix": jobs.CONVERSE_LOCK_PREFIX}
        )
        orphans = [Conversation(a, b) for a, b in await cur.fetchall()]
    if orphans:
        log.warning(
            "%d 个会话有待处理消息却没有任务，已补上 / %d conversation(s) had work but no job: deferred",
            len(orphans),
            len(orphans),
            extra={"decision": "orphans_deferred"},
        )
    return await jobs.defer_conversations(pipeline, orphans)


class SyncSweep:
    """Defers a sync for accounts not synced within `interval` seconds (at most once per interval each)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._deferred_at: dict[str, float] = {}

    async def run(self, pipeline: Pipeline) -> int:
        if self.interval <= 0:
            return 0
        async with pipeline.pool.connection() as conn:
            cur = await conn.execute(
                _ACCOUNTS_TO_SWEEP, {"sweep": self.interval, "prefix": jobs.SYNC_LOCK_PREFIX}
            )
            accounts = [str(row[0]) for row in await cur.fetchall()]
        now = time.monotonic()
        # An account whose sync keeps failing (a WeCom refusal retrying cannot fix) is tried once per
        # interval, not at every pass.
        due = [a for a in accounts if now - self._deferred_at.get(a, -self.interval) >= self.interval]
        for open_kfid in due:
            await jobs.defer_sync(pipeline.procrastinate, open_kfid)
            self._deferred_at[open_kfid] = now
        return len(due)
