from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from wxkf.config import Settings
from wxkf.db.engine import Database, DatabaseError, ensure_pgvector
from wxkf.db.migrate import alembic_config, current_heads, upgrade


async def test_migrated_database_has_pgvector_and_procrastinate(database: Database) -> None:
    async with database.engine.connect() as conn:
        version = (
            await conn.execute(text("SELECT extversion FROM pg_extension WHERE extname='vector'"))
        ).scalar()
        jobs = (await conn.execute(text("SELECT count(*) FROM procrastinate_jobs"))).scalar()
    assert version is not None
    assert jobs == 0
    # Every area's branch of migrations is applied: the database is at all of the scripts' heads.
    expected = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert sorted(current_heads(database.conninfo)) == sorted(expected)


def test_upgrade_is_idempotent(database_url: str) -> None:
    before = current_heads(database_url)
    upgrade(database_url)
    assert current_heads(database_url) == before


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(DatabaseError) as info:
        ensure_pgvector("postgresql://nobody:hunter2@127.0.0.1:1/none?connect_timeout=2")
    assert "DATABASE_URL" in str(info.value)
    assert "hunter2" not in str(info.value)


async def test_embedded_default_starts_and_keeps_data(embedded_data_dir: Path) -> None:
    settings = Settings(_env_file=None, wxkf_data_dir=embedded_data_dir)
    first = await Database.open(settings)
    async with first.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE kept (v int)"))
        await conn.execute(text("INSERT INTO kept VALUES (42)"))
    await first.close()
    second = await Database.open(settings)
    async with second.engine.connect() as conn:
        assert (await conn.execute(text("SELECT v FROM kept"))).scalar() == 42
    await second.close()
    with psycopg.connect(second.conninfo) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
