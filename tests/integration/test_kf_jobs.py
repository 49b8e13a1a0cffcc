"""Deferring conversation jobs in batches: one queued job per conversation, whatever was queued before."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

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


async def test_a_batch_with_an_already_queued_conversation_defers_the_others_once(
    settings_factory: Any, database_url: str
) -> None:
    conversations = [Conversation(KFID, f"wm{i:03d}") for i in range(jobs.DEFER_BATCH + 5)]
    async with Pipeline(settings_factory(), database_url) as pipeline:
        await jobs.defer_converse(pipeline.procrastinate, conversations[3])  # already queued
        await jobs.defer_conversations(pipeline, conversations)
        await jobs.defer_conversations(pipeline, conversations[:2])  # all queued: nothing new
    assert queued(database_url) == {c.external_userid: 1 for c in conversations}


async def test_a_burst_of_deferred_jobs_refreshes_the_job_table_statistics(
    settings_factory: Any, database_url: str
) -> None:
    def analyzed() -> bool:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'procrastinate_jobs'"
            ).fetchone()
        return bool(row and row[0])

    async with Pipeline(settings_factory(), database_url) as pipeline:
        few = [Conversation(KFID, f"wf{i:03d}") for i in range(jobs.ANALYZE_AFTER - 1)]
        await jobs.defer_conversations(pipeline, few)
        assert not analyzed()  # a small sync leaves it to autovacuum
        burst = [Conversation(KFID, f"wb{i:03d}") for i in range(jobs.ANALYZE_AFTER)]
        await jobs.defer_conversations(pipeline, burst)
    for _ in range(50):  # the statistics view is updated when ANALYZE reports, within moments
        if analyzed():
            break
        await asyncio.sleep(0.1)
    assert analyzed()
    assert len(queued(database_url)) == len(few) + len(burst)
