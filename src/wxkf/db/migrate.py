"""Apply wxkf's Alembic migrations and procrastinate's schema (at start and by `wxkf db upgrade`).

Each area of wxkf (kf pipeline, agent, contact, push, ops) keeps its own branch of migrations that
starts from the core revision, so `upgrade("heads")` applies them all.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool

from wxkf.db.engine import to_sqlalchemy_url

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x77786B66  # "wxkf": one migrator at a time across processes


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


def install_procrastinate(conninfo: str) -> None:
    """Install procrastinate's tables beside ours once."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone() != (None,):
            return
        conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})")
        try:
            if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone() == (None,):
                from procrastinate.schema import SchemaManager

                conn.execute(SchemaManager.get_schema())
        finally:
            conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})")


def current_heads(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        if conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,):
            return []
        return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version ORDER BY 1")]
