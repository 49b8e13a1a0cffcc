"""Apply wxkf's Alembic migrations and procrastinate's schema (at start and by `wxkf db upgrade`).

Each area of wxkf (kf pipeline, agent, contact, push, ops) keeps its own branch of migrations that
starts from the core revision, so `upgrade("heads")` applies them all.

Why Alembic, when every migration is plain SQL (`op.execute`) and the pool is psycopg's: its
branches let each area add revisions without touching the others' (one head per area, applied
together at `heads`), every existing install records where it is in `alembic_version`, and
downgrades and `alembic history` come with it. A home-made runner of numbered SQL files would have
to redo all of that, and give existing installs a new version table. SQLAlchemy stays as the
connection Alembic runs on (a synchronous psycopg one, made and dropped here), not as a way to query.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x77786B66  # "wxkf": one migrator at a time across processes


def to_sqlalchemy_url(conninfo: str) -> str:
    """The SQLAlchemy URL (psycopg driver) of a libpq URI, for Alembic's connection."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", conninfo)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(conninfo: str, revision: str = "heads") -> None:
    engine = create_engine(to_sqlalchemy_url(conninfo), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_LOCK_KEY})")
            try:
                config = alembic_config()
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                conn.commit()
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_LOCK_KEY})")
                conn.commit()
    finally:
        engine.dispose()
    install_procrastinate(conninfo)


# procrastinate's fetch asks, for each queued job, whether an earlier job holds the same lock; its
# own index leads with the id, so each probe reads every queued job. While the table's statistics
# still say "empty" (a burst before autovacuum's next ANALYZE) the planner probes all queued jobs
# before picking one: 3,000 queued conversation jobs made each fetch take 170 ms of PostgreSQL CPU.
# With the lock leading, a probe is one index lookup and the same fetch takes 1 ms.
JOBS_LOCK_INDEX = "wxkf_procrastinate_jobs_lock_idx"


def install_procrastinate(conninfo: str) -> None:
    """Install procrastinate's tables beside ours once, with the lock index its fetch needs.

    The index is built CONCURRENTLY: processes already running keep queueing and fetching jobs
    while a newer one adds it. A build that failed half-way leaves an invalid index, rebuilt here.
    """

    def state(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[bool, bool | None]:
        """(procrastinate's schema is missing, the index: None absent, False invalid, True valid)."""
        row = conn.execute(
            "SELECT to_regclass('procrastinate_jobs') IS NULL, "
            "(SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s))",
            (JOBS_LOCK_INDEX,),
        ).fetchone()
        assert row is not None
        return bool(row[0]), None if row[1] is None else bool(row[1])

    with psycopg.connect(conninfo, autocommit=True) as conn:
        if state(conn) == (False, True):
            return
        conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})")
        try:
            schema_missing, index = state(conn)
            if schema_missing:
                from procrastinate.schema import SchemaManager

                conn.execute(SchemaManager.get_schema())
            if index is False:
                conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {JOBS_LOCK_INDEX}")
            if index is not True:
                conn.execute(
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {JOBS_LOCK_INDEX} ON procrastinate_jobs (lock) "
                    "WHERE status IN ('todo', 'doing')"
                )
        finally:
            conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})")


def current_heads(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        if conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,):
            return []
        return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version ORDER BY 1")]
