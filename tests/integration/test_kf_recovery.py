"""Crash recovery converges: whatever dead workers left in procrastinate's queue, every key ends with
exactly one job that can run, and conversations with work but no job get one."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from wxkf.kf import jobs
from wxkf.kf.responder import Conversation
from wxkf.kf.runtime import Pipeline

KFID = "wkRECOVER"


def _sql(conninfo: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return list(cur.fetchall()) if cur.description else []


def _statuses(conninfo: str, doing_by: int | None = None) -> dict[str, list[str]]:
    """The statuses of the todo and doing jobs (or only those `doing_by` runs), per lock."""
    by_lock: dict[str, list[str]] = {}
    for lock, status in _sql(
        conninfo,
        "SELECT lock, status::text FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        " AND (%s::bigint IS NULL OR (status = 'doing' AND worker_id = %s)) ORDER BY id",
        doing_by,
        doing_by,
    ):
        by_lock.setdefault(lock, []).append(status)
    return by_lock


async def _start_as(pipeline: Pipeline, worker_id: int, conversation: Conversation) -> None:
    """`worker_id` fetches the conversation's queued job (it is then `doing`, holding the lock)."""
    job = await pipeline.procrastinate.job_manager.fetch_job(queues=None, worker_id=worker_id)
    assert job is not None
    assert job.task_kwargs["external_userid"] == conversation.external_userid


def _die(conninfo: str, worker_id: int) -> None:
    """kill -9: the worker's heartbeat stops (it never unregisters)."""
    _sql(
        conninfo,
        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' WHERE id = %s",
        worker_id,
    )


def _pending_message(conninfo: str, conversation: Conversation, msgid: str) -> None:
    """A customer message recorded a minute ago (a crash between the sync's commit and its defer)."""
    _sql(
        conninfo,
        "INSERT INTO kf_inbound (open_kfid, msgid, external_userid, origin, msgtype, send_time, body,"
        " recorded_at) VALUES (%s, %s, %s, 3, 'text', now(), '{}', now() - interval '1 minute')",
        conversation.open_kfid,
        msgid,
        conversation.external_userid,
    )


async def test_a_dead_workers_job_whose_twin_is_queued_does_not_stall_the_conversation(
    settings_factory: Any, database_url: str, database: Any
) -> None:
    """The stall of issue 12: the dead job keeps the lock, its queued twin can never run."""
    first, second = Conversation(KFID, "wmTWIN"), Conversation(KFID, "wmALONE")
    async with Pipeline(settings_factory(), database) as pipeline:
        manager = pipeline.procrastinate.job_manager
        dead = await manager.register_worker()
        await jobs.defer_converse(pipeline.procrastinate, first)
        await _start_as(pipeline, dead, first)
        await jobs.defer_converse(pipeline.procrastinate, second)
        await _start_as(pipeline, dead, second)
        # New messages for the first conversation arrive while its job runs: a twin is queued.
        assert await jobs.defer_converse(pipeline.procrastinate, first)
        _die(database_url, dead)

        for _ in range(2):  # a second pass finds a settled queue and changes nothing
            await pipeline.recover(stalled_after=5)
            assert _statuses(database_url) == {
                jobs._converse_lock(first): ["todo"],
                jobs._converse_lock(second): ["todo"],
            }
        # Both can run now: nothing holds their locks.
        alive = await manager.register_worker()
        started = {
            job.task_kwargs["external_userid"]
            for job in [await manager.fetch_job(queues=None, worker_id=alive) for _ in range(2)]
            if job is not None
        }
        assert started == {first.external_userid, second.external_userid}


# Each conversation starts in one of these states; after recovery, `expect` is what its lock holds.
STATES = {
    "dead_doing": ["todo"],
    "dead_doing_and_twin": ["todo"],
    "alive_doing": ["doing"],
    "alive_doing_and_twin": ["doing", "todo"],
    "queued": ["todo"],
    "orphaned_message": ["todo"],  # pending work and no job at all
    "idle": [],
}


@pytest.mark.parametrize("order", ["as_listed", "reversed"])
async def test_recovery_converges_from_any_mix_of_queue_states(
    settings_factory: Any, database_url: str, database: Any, order: str
) -> None:
    names = list(STATES) if order == "as_listed" else list(reversed(STATES))
    conversations = {name: Conversation(KFID, f"wm_{name}") for name in names}
    async with Pipeline(settings_factory(), database) as pipeline:
        app, manager = pipeline.procrastinate, pipeline.procrastinate.job_manager
        dead, alive = await manager.register_worker(), await manager.register_worker()
        for name in names:  # the running jobs first: a fetch takes the oldest job it can run
            if "doing" in name:
                await jobs.defer_converse(app, conversations[name])
                await _start_as(pipeline, dead if name.startswith("dead") else alive, conversations[name])
        for name in names:
            if name.endswith("twin") or name == "queued":
                assert await jobs.defer_converse(app, conversations[name])
            if name == "orphaned_message":
                _pending_message(database_url, conversations[name], "orphan-1")
        _die(database_url, dead)

        for _ in range(2):
            await pipeline.recover(stalled_after=5)
            held = _statuses(database_url)
            assert {name: held.get(jobs._converse_lock(c), []) for name, c in conversations.items()} == {
                name: STATES[name] for name in names
            }
            assert _statuses(database_url, doing_by=dead) == {}


async def test_a_job_its_live_worker_no_longer_runs_is_settled_on_the_second_look(
    settings_factory: Any, database_url: str, database: Any
) -> None:
    """A job whose outcome procrastinate could not write (its retry met the queued successor's unique
    index, or the database was away a moment) stays `doing` under a worker that is alive and beating:
    no stall detection finds it, and it holds the conversation's lock."""
    from wxkf.kf.recovery import StrandedJobs

    stuck, busy = Conversation(KFID, "wmSTUCK"), Conversation(KFID, "wmBUSY")
    async with Pipeline(settings_factory(), database) as pipeline:
        app, manager = pipeline.procrastinate, pipeline.procrastinate.job_manager
        live = await manager.register_worker()
        await jobs.defer_converse(app, stuck)
        await _start_as(pipeline, live, stuck)
        assert await jobs.defer_converse(app, stuck)  # its successor waits for the lock
        await jobs.defer_converse(app, busy)
        await _start_as(pipeline, live, busy)
        [running] = [
            j.id for j in await manager.list_jobs_async(status="doing") if j.lock == jobs._converse_lock(busy)
        ]
        assert running is not None
        stranded = StrandedJobs()
        assert await stranded.settle(pipeline, live, {running}) == 0  # once could be an outcome being written
        assert await stranded.settle(pipeline, live, {running}) == 1
        assert _statuses(database_url) == {
            jobs._converse_lock(stuck): ["todo"],  # the successor can run now
            jobs._converse_lock(busy): ["doing"],  # what the worker runs is left alone
        }
