from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from wxkf.config import Settings
from wxkf.db.engine import Database, DatabaseError, ensure_pgvector
from wxkf.db.migrate import JOBS_LOCK_INDEX, alembic_config, current_heads, upgrade


async def test_migrated_database_has_pgvector_and_procrastinate(database: Database) -> None:
    async with database.pool.connection() as conn:
        version = await (
            await conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'")
        ).fetchone()
        jobs = await (await conn.execute("SELECT count(*) FROM procrastinate_jobs")).fetchone()
    assert version is not None
    assert jobs == (0,)
    # Every area's branch of migrations is applied: each of the scripts' heads is a recorded revision or
    # one of their ancestors (a branch that another depends on, like kf for console, is not recorded).
    script = ScriptDirectory.from_config(alembic_config())
    applied = {r.revision for r in script.iterate_revisions(tuple(current_heads(database.conninfo)), "base")}
    assert set(script.get_heads()) <= applied


def test_upgrade_is_idempotent(database_url: str) -> None:
    before = current_heads(database_url)
    upgrade(database_url)
    assert current_heads(database_url) == before


# procrastinate's fetch, reduced to the probe that checks a job's lock (procrastinate_fetch_job_v2).
_FETCH_PROBE = """
EXPLAIN (FORMAT JSON) SELECT jobs.id FROM procrastinate_jobs AS jobs
WHERE NOT EXISTS (
    SELECT 1 FROM procrastinate_jobs AS other_jobs
    WHERE jobs.lock IS NOT NULL AND other_jobs.lock = jobs.lock
      AND (other_jobs.status = 'doing'
           OR (other_jobs.status = 'todo' AND (other_jobs.priority > jobs.priority
               OR (other_jobs.priority = jobs.priority AND other_jobs.id < jobs.id)))))
  AND jobs.status = 'todo'
ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1 FOR UPDATE OF jobs SKIP LOCKED
"""


def test_job_fetch_probes_locks_by_index_before_statistics_catch_up(database_url: str) -> None:
    """A burst of queued jobs before ANALYZE: each lock probe is an index lookup on the lock."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, args) "
            "SELECT 'default', 'kf:converse', 'kf-conv:wk:' || g, 'kf-conv:wk:' || g, '{}' "
            "FROM generate_series(1, 2000) g"
        )
        row = conn.execute(_FETCH_PROBE).fetchone()
    assert row is not None
    assert f'"Index Name": "{JOBS_LOCK_INDEX}"' in json.dumps(row[0])


def lock_index_valid(conninfo: str) -> bool | None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (JOBS_LOCK_INDEX,)
        ).fetchone()
    return None if row is None else bool(row[0])


def test_upgrade_adds_the_lock_index_to_an_existing_install(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {JOBS_LOCK_INDEX}")
    assert lock_index_valid(database_url) is None
    upgrade(database_url)
    assert lock_index_valid(database_url) is True


def test_upgrade_rebuilds_a_lock_index_left_invalid_by_a_failed_build(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:  # what an interrupted CONCURRENTLY leaves
        conn.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%s)", (JOBS_LOCK_INDEX,)
        )
    assert lock_index_valid(database_url) is False
    upgrade(database_url)
    assert lock_index_valid(database_url) is True


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(DatabaseError) as info:
        ensure_pgvector("postgresql://nobody:hunter2@127.0.0.1:1/none?connect_timeout=2")
    assert "DATABASE_URL" in str(info.value)
    assert "hunter2" not in str(info.value)


async def test_embedded_default_starts_and_keeps_data(embedded_data_dir: Path) -> None:
    settings = Settings(_env_file=None, wxkf_data_dir=embedded_data_dir)
    first = await Database.open(settings)
    async with first.pool.connection() as pooled, pooled.transaction():
        await pooled.execute("CREATE TABLE kept (v int)")
        await pooled.execute("INSERT INTO kept VALUES (42)")
    await first.close()
    second = await Database.open(settings)
    async with second.pool.connection() as pooled:
        assert await (await pooled.execute("SELECT v FROM kept")).fetchone() == (42,)
    await second.close()
    with psycopg.connect(second.conninfo) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
