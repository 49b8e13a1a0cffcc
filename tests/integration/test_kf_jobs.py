"""Deferring conversation jobs in batches: one queued job per conversation, whatever was queued before."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from wxkf.db.engine import Database
from wxkf.kf import jobs
from wxkf.kf.responder import Conversation
from wxkf.kf.runtime import Pipeline

KFID = "wkJOBS"


def queued(conninfo: str) -> dict[str, int]:
    """Queued conversation jobs per external_userid."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT args->>'external_userid', count(*) FROM procrastinate_jobs "
            "WHERE task_name = %s AND status = 'todo' GROUP BY 1",
            (jobs.CONVERSE_TASK,),
        ).fetchall()
    return {user: int(n) for user, n in rows}


async def test_already_queued_conversations_are_left_out_and_the_others_queued_once(
    settings_factory: Any, database: Database, database_url: str
) -> None:
    conversations = [Conversation(KFID, f"wm{i:03d}") for i in range(jobs.DEFER_BATCH + 5)]
    async with Pipeline(settings_factory(), database) as pipeline:
        assert await jobs.defer_converse(pipeline.procrastinate, conversations[3])  # already queued
        assert await jobs.defer_conversations(pipeline, conversations) == len(conversations) - 1
        assert await jobs.defer_conversations(pipeline, conversations[:2]) == 0  # all queued: nothing new
    assert queued(database_url) == {c.external_userid: 1 for c in conversations}


async def test_a_job_queued_meanwhile_sends_its_batch_one_by_one(
    settings_factory: Any, database: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process queued a job after the check: the batch fails whole, then goes one by one."""
    monkeypatch.setattr(
        jobs, "_QUEUED_LOCKS", "SELECT NULL WHERE %s::text[] IS NULL"
    )  # the check sees nothing
    conversations = [Conversation(KFID, f"wr{i:03d}") for i in range(5)]
    async with Pipeline(settings_factory(), database) as pipeline:
        await jobs.defer_converse(pipeline.procrastinate, conversations[2])
        assert await jobs.defer_conversations(pipeline, conversations) == 4
    assert queued(database_url) == {c.external_userid: 1 for c in conversations}


def analyze_count(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'procrastinate_jobs'"
        ).fetchone()
    return int(row[0]) if row else 0


async def until_analyzed(conninfo: str, count: int) -> None:
    for _ in range(50):  # the statistics view is updated when ANALYZE reports, within moments
        if analyze_count(conninfo) >= count:
            return
        await asyncio.sleep(0.1)


async def test_a_burst_of_queued_jobs_refreshes_the_job_table_statistics(
    settings_factory: Any, database: Database, database_url: str
) -> None:
    async with Pipeline(settings_factory(), database) as pipeline:
        few = [Conversation(KFID, f"wf{i:03d}") for i in range(jobs.ANALYZE_AFTER - 1)]
        await jobs.defer_conversations(pipeline, few)
        assert analyze_count(database_url) == 0  # a small sync leaves it to autovacuum
        burst = [Conversation(KFID, f"wb{i:03d}") for i in range(jobs.ANALYZE_AFTER)]
        await jobs.defer_conversations(pipeline, burst)
        await until_analyzed(database_url, 1)
        assert analyze_count(database_url) == 1
        # The same conversations again (a backlog): nothing is queued, nothing to analyse.
        assert await jobs.defer_conversations(pipeline, [*few, *burst]) == 0
        await asyncio.sleep(0.5)
        assert analyze_count(database_url) == 1
    assert len(queued(database_url)) == len(few) + len(burst)
