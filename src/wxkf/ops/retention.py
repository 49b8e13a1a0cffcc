"""Retention: rows past their age are deleted by a procrastinate periodic job, a bounded batch at a time.

    table                 deleted when (RETENTION_* in days; 0 keeps a table whole)
    kf_callback_events    received more than RETENTION_CALLBACK_DAYS ago
    kf_inbound            processed (not pending) more than RETENTION_INBOUND_DAYS ago
    kf_outbox             sent or failed more than RETENTION_OUTBOX_DAYS ago
    agent_tool_calls,     older than RETENTION_AUDIT_DAYS
      agent_llm_failures
    contact_receipts,     older than RETENTION_CONTACT_DAYS (receipts by their send time; reminders by
      contact_reminders,  when they were sent; confirmations by when they expired)
      contact_confirmations
    procrastinate_jobs    failed, cancelled or aborted more than RETENTION_JOB_DAYS ago (successful ones
                          are deleted when they finish)
    media_inbound         received more than MEDIA_RETENTION_DAYS ago, with the stored files no one
      and the store       else names (`wxkf.media.inbound.InboundMedia.purge`, in batches of its own)

Never deleted, whatever their age, because exactly-once needs them: each account's sync cursor
(`kf_sync_cursors` is not touched), unprocessed inbound rows and unsent outbox rows, and each
customer's 48 h window (`kf_conversations`, one row per customer, not per message). The minimum
ages make the rest safe: WeCom's sync_msg hands out at most 3 days of history (wecom-api §3), so an
inbound row kept 4 days or more is still there for any message WeCom could hand out again, and an
outbox row kept as long is still there for its msg_send_fail event.

Each batch is one statement of at most BATCH_ROWS rows under a statement timeout, taking rows that
no one else has locked (`FOR UPDATE SKIP LOCKED`): a pass never holds a lock for long and never waits
on the pipeline. A run does at most MAX_BATCHES batches per table; the next run goes on.
Rows that /metrics counts are folded into their `kf_counters` counter in the same statement, so
the exported counters never go down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import procrastinate
from procrastinate import JobContext

from wxkf.config import Settings
from wxkf.db.engine import Pool
from wxkf.media.inbound import purge as purge_media
from wxkf.media.storage import MediaStore

log = logging.getLogger("wxkf.ops.retention")

RETENTION_TASK = "ops:retention"
RETENTION_LOCK = "ops-retention"  # one run at a time across all workers, one queued at most
BATCH_ROWS = 1000
MAX_BATCHES = 100  # per table and run: at most 100,000 rows of a table per run
STATEMENT_TIMEOUT = "10s"

# Rows to delete, oldest first: the primary key's order is the insertion order, so each batch reads
# the oldest rows through the index and stops at BATCH_ROWS.
_CALLBACKS = """
WITH gone AS (
    DELETE FROM kf_callback_events WHERE id IN (
        SELECT id FROM kf_callback_events WHERE received_at < now() - %(age)s
        ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
    RETURNING known_account, deliveries
), folded AS (
    INSERT INTO kf_counters (name, value)
    SELECT name, value FROM (
        SELECT 'kf.callback.accepted' AS name, count(*) FILTER (WHERE known_account) AS value FROM gone
        UNION ALL SELECT 'kf.callback.unknown_account', count(*) FILTER (WHERE NOT known_account) FROM gone
        UNION ALL SELECT 'kf.callback.duplicate', coalesce(sum(deliveries - 1), 0) FROM gone
    ) AS t WHERE value > 0
    ON CONFLICT (name) DO UPDATE SET value = kf_counters.value + EXCLUDED.value
)
SELECT count(*) FROM gone
"""
_INBOUND = """
WITH gone AS (
    DELETE FROM kf_inbound WHERE id IN (
        SELECT id FROM kf_inbound WHERE status <> 'pending' AND processed_at < now() - %(age)s
        ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone
"""
_OUTBOX = """
WITH gone AS (
    DELETE FROM kf_outbox WHERE id IN (
        SELECT id FROM kf_outbox
        WHERE status <> 'pending' AND coalesce(sent_at, created_at) < now() - %(age)s
        ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
    RETURNING kind, status
), folded AS (
    INSERT INTO kf_counters (name, value)
    SELECT 'kf.replies.' || kind || '.' || status, count(*) FROM gone GROUP BY kind, status
    ON CONFLICT (name) DO UPDATE SET value = kf_counters.value + EXCLUDED.value
)
SELECT count(*) FROM gone
"""


def _plain(table: str, when: str) -> str:
    """A batch of `table` whose `when` is older than the age, with nothing to fold."""
    return f"""
WITH gone AS (
    DELETE FROM {table} WHERE id IN (
        SELECT id FROM {table} WHERE {when} < now() - %(age)s
        ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone
"""


_TOOL_CALLS = _plain("agent_tool_calls", "called_at")
_LLM_FAILURES = _plain("agent_llm_failures", "failed_at")  # /metrics counts them from kf_counters
_RECEIPTS = _plain("contact_receipts", "coalesce(received_at, created_at)")
_REMINDERS = _plain("contact_reminders", "reminded_at")
_CONFIRMATIONS = """
WITH gone AS (
    DELETE FROM contact_confirmations WHERE token IN (
        SELECT token FROM contact_confirmations WHERE expires_at < now() - %(age)s
        LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone
"""


@dataclass(frozen=True)
class Target:
    table: str
    sql: str
    days: float


def targets(settings: Settings) -> list[Target]:
    """What a pass deletes, with the ages from the settings (tables kept whole are left out)."""
    every = [
        Target("kf_callback_events", _CALLBACKS, settings.retention_callback_days),
        Target("kf_inbound", _INBOUND, settings.retention_inbound_days),
        Target("kf_outbox", _OUTBOX, settings.retention_outbox_days),
        Target("agent_tool_calls", _TOOL_CALLS, settings.retention_audit_days),
        Target("agent_llm_failures", _LLM_FAILURES, settings.retention_audit_days),
        Target("contact_receipts", _RECEIPTS, settings.retention_contact_days),
        Target("contact_reminders", _REMINDERS, settings.retention_contact_days),
        Target("contact_confirmations", _CONFIRMATIONS, settings.retention_contact_days),
    ]
    return [t for t in every if t.days > 0]


async def _batch(pool: Pool, target: Target) -> int:
    async with pool.connection() as conn, conn.pipeline(), conn.transaction():
        await conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        cur = await conn.execute(target.sql, {"age": timedelta(days=target.days), "batch": BATCH_ROWS})
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def run_pass(
    pool: Pool, settings: Settings, app: procrastinate.App | None = None, media: MediaStore | None = None
) -> dict[str, int]:
    """One bounded pass over every table; returns the rows deleted per table.

    With `app`, procrastinate's finished jobs older than RETENTION_JOB_DAYS go too (its own query);
    with `media`, media past MEDIA_RETENTION_DAYS leave that store (the files deleted are counted).
    """
    deleted: dict[str, int] = {}
    for target in targets(settings):
        total = 0
        for _ in range(MAX_BATCHES):
            n = await _batch(pool, target)
            total += n
            if n < BATCH_ROWS:
                break
        deleted[target.table] = total
    if app is not None and settings.retention_job_days > 0:
        await app.job_manager.delete_old_jobs(
            nb_hours=max(1, round(settings.retention_job_days * 24)),
            include_failed=True,
            include_cancelled=True,
            include_aborted=True,
        )
    if media is not None:
        deleted["media_files"] = await purge_media(pool, media, timedelta(days=settings.media_retention_days))
    removed = {table: n for table, n in deleted.items() if n}
    if removed:
        log.info(
            "已删除过期记录 / deleted rows past their retention: %s",
            ", ".join(f"{table} {n}" for table, n in removed.items()),
            extra={"decision": "retention"},
        )
    return deleted


class _Owner(Protocol):
    pool: Pool
    settings: Settings

    @property
    def media_store(self) -> MediaStore: ...


async def retention_job(context: JobContext, timestamp: int) -> None:
    owner: _Owner = context.additional_context["pipeline"]
    await run_pass(owner.pool, owner.settings, context.app, owner.media_store)


def register_task(app: procrastinate.App, settings: Settings) -> None:
    """Register the periodic retention job on a worker's procrastinate app (RETENTION_CRON)."""
    task: Any = app.task(
        name=RETENTION_TASK, pass_context=True, lock=RETENTION_LOCK, queueing_lock=RETENTION_LOCK
    )(retention_job)
    app.periodic(cron=settings.retention_cron)(task)
