"""Doctor's database checks against real PostgreSQL servers: one with pgvector, one without.

The server without pgvector is honest, not simulated: the same PostgreSQL 16 build pgserver ships,
copied without pgvector's files (`vector.control`, `vector--*.sql`, `vector.so`), initialised and
started in a temp directory — exactly what an operator's distro PostgreSQL without the
`postgresql-16-pgvector` package looks like.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from wxkf.config import Settings
from wxkf.ops.doctor import DoctorContext, check_database


def _ignore_pgvector(_directory: str, names: list[str]) -> list[str]:
    return [name for name in names if name.startswith("vector")]


@pytest.fixture(scope="module")
def postgres_without_pgvector(pg_admin_uri: str) -> Iterator[str]:
    """A running PostgreSQL whose installation has no pgvector; yields its admin URI.

    Depends on `pg_admin_uri` so pgserver has already created its unprivileged system user, which
    PostgreSQL needs when the tests run as root.
    """
    import pgserver

    source = Path(pgserver.__file__).parent / "pginstall"
    root = Path(tempfile.mkdtemp(prefix="wxkf-novec-"))  # short: Unix socket paths are limited
    install, data, sockets = root / "site" / "pgserver" / "pginstall", root / "data", root / "s"
    bin_dir = install / "bin"
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        run_as = {"user": "pgserver"}
    try:
        root.chmod(0o755)
        shutil.copytree(source, install, ignore=_ignore_pgvector, symlinks=True)
        # The binaries find their bundled libpq through RPATH $ORIGIN/../../../pgserver.libs.
        (root / "site" / "pgserver.libs").symlink_to(source.parent.parent / "pgserver.libs")
        data.mkdir()
        sockets.mkdir()
        sockets.chmod(0o777)
        if run_as:
            shutil.chown(data, user="pgserver")
        subprocess.run(
            [bin_dir / "initdb", "-D", data, "--auth=trust", "--encoding=utf8", "-U", "postgres"],
            check=True,
            capture_output=True,
            **run_as,
        )
        start: list[str | Path] = [bin_dir / "pg_ctl", "-D", data, "-w", "-o", '-h ""', "-o", f"-k {sockets}"]
        subprocess.run([*start, "-l", data / "log", "start"], check=True, capture_output=True, **run_as)
        yield f"postgresql://postgres@/postgres?host={sockets}"
    finally:
        if (data / "postmaster.pid").exists():
            stop: list[str | Path] = [bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"]
            subprocess.run(stop, check=False, capture_output=True, **run_as)
        shutil.rmtree(root, ignore_errors=True)


async def run_check(settings: Settings) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        results = await check_database(DoctorContext(settings=settings, http=http))
    return {r.check: r for r in results}


async def test_database_with_pgvector_passes(settings_factory: Any) -> None:
    results = await run_check(settings_factory())
    assert results["database"].status == "ok"
    assert "PostgreSQL 16" in results["database"].detail
    assert results["pgvector"].status == "ok"
    assert results["pgvector"].detail.startswith("pgvector 0.")


async def test_database_without_pgvector_is_diagnosed(postgres_without_pgvector: str, tmp_path: Path) -> None:
    with psycopg.connect(postgres_without_pgvector) as conn:  # the premise: the server really lacks it
        assert conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone() is None

    settings = Settings(_env_file=None, database_url=postgres_without_pgvector, wxkf_data_dir=tmp_path)
    results = await run_check(settings)

    assert results["database"].status == "ok"
    pgvector = results["pgvector"]
    assert pgvector.status == "fail"
    assert "数据库缺少 pgvector 扩展" in pgvector.detail
    assert "apt install postgresql-16-pgvector" in pgvector.fix
    assert "CREATE EXTENSION vector" in pgvector.fix
    assert "不设置 DATABASE_URL" in pgvector.fix
    assert pgvector.see == "docs/troubleshooting.md#pgvector-missing"


async def test_unreachable_database_names_database_url_and_skips_pgvector(tmp_path: Path) -> None:
    url = f"postgresql://wxkf:pw-not-shown@/wxkf?host={tmp_path}"  # no server listens there
    results = await run_check(Settings(_env_file=None, database_url=url, wxkf_data_dir=tmp_path))

    assert results["database"].status == "fail"
    assert "无法连接数据库" in results["database"].detail
    assert "DATABASE_URL" in results["database"].fix
    assert results["pgvector"].status == "skip"
    assert all("pw-not-shown" not in r.detail + r.fix for r in results.values())


async def test_doctor_before_db_upgrade_names_each_check_and_does_not_claim_all_passed(
    pg_admin_uri: str, sim: Any, tmp_path: Path
) -> None:
    """The tables do not exist yet: the checks that read them say so, by their titles, as warnings."""
    import io

    from rich.console import Console

    from wxkf.ops.cli import render
    from wxkf.ops.doctor import (
        check_kf_accounts,
        check_kf_routing,
        check_knowledge_base,
        check_wecom_tokens,
        run_doctor,
    )

    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute("CREATE DATABASE doctor_unmigrated")
    settings = Settings(
        _env_file=None,
        **sim.settings_overrides(),
        database_url=pg_admin_uri.replace("/postgres?", "/doctor_unmigrated?", 1),
        wxkf_data_dir=tmp_path / "var",
    )
    report = await run_doctor(
        settings,
        checks=[
            check_database,
            check_wecom_tokens,
            check_kf_accounts,
            check_kf_routing,
            check_knowledge_base,
        ],
    )
    unmigrated = [r for r in report.results if "db upgrade" in r.detail + r.fix]
    assert {r.check: r.status for r in unmigrated} == {"kf_accounts": "warn", "kf_routing": "warn"}
    assert all(not r.title.startswith("check_") and r.title != r.check for r in report.results)
    # Nothing migrated is nothing loaded: the knowledge base is empty, said as such, with the fix.
    (kb,) = [r for r in report.results if r.check == "knowledge_base"]
    assert (kb.status, kb.title) == ("fail", "知识库 / knowledge base")
    assert "wxkf kb add" in kb.fix
    screen = io.StringIO()
    render(report, Console(file=screen, width=200))
    assert "all checks passed" not in screen.getvalue()
    assert "1 check(s) failed" in screen.getvalue()  # the empty knowledge base; the rest warn
