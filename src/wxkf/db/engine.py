"""Connect to PostgreSQL: the server in `DATABASE_URL`, or a private embedded one from `pgserver`.

The embedded server lives in `WXKF_DATA_DIR/pg`, survives restarts, and is stopped when the last
process using it exits (pgserver counts references). pgvector ≥ 0.5 is required either way.

`Database.open` gives a process its one way to the database: a psycopg pool of at most
DATABASE_POOL_SIZE connections that every package takes (the pipeline, procrastinate, the contact
service, /ready, /metrics, the token cache). Queries are named SQL constants with psycopg
parameters; connections are in autocommit, so a single statement costs one round trip and a change
of several statements says so with `conn.transaction()`:

    async with database.pool.connection() as conn, conn.transaction():
        await conn.execute(_RESERVE, (open_kfid, external_userid))

Each connection names its role and process in `pg_stat_activity.application_name`
(`wxkf:<host>:<pid>` for the pool, `wxkf-listen:…` and `wxkf-callbacks:…` for the two kept beside
it, see `wxkf.db.budget`), so an operator can see which replica holds what.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from wxkf.config import Settings

MIN_PGVECTOR = (0, 5)
EMBEDDED_DBNAME = "wxkf"
POOL_ROLE = "wxkf"  # application_name prefix of the pool's connections

Pool = AsyncConnectionPool[AsyncConnection[Any]]


def application_name(role: str) -> str:
    """`<role>:<host>:<pid>`: how a connection shows in pg_stat_activity, per process.

    The host tells replicas apart (in containers every replica's process may have the same pid).
    """
    return f"{role}:{socket.gethostname()[:24]}:{os.getpid()}"


class DatabaseError(Exception):
    """The database cannot be used; the message says why and what to do."""


def connection_lost(exc: BaseException | None) -> psycopg.OperationalError | None:
    """The lost database connection behind `exc` (itself, or its cause or context), if any: an
    outage, not a bug of the code that met it."""
    for _ in range(10):  # a chain is short; a cycle must not hang the caller
        if exc is None:
            return None
        if isinstance(exc, psycopg.OperationalError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def to_conninfo(url: str) -> str:
    """A libpq URI for psycopg/procrastinate from any `postgresql[+driver]://` URL."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def describe(url: str) -> str:
    """The URL without its password, safe to print."""
    parts = urlsplit(to_conninfo(url))
    host = parts.hostname or parse_qs(parts.query).get("host", ["local socket"])[0]
    return (
        f"postgresql://{parts.username or ''}@{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"
    )


def start_embedded(data_dir: Path, dbname: str = EMBEDDED_DBNAME, *, fresh: bool = False) -> str:
    """Start (or join) the private PostgreSQL in `data_dir/pg`; return a URI for database `dbname`.

    `fresh`: drop the database first, so it starts empty (the demo's own database).
    """

    pgdata = (data_dir / "pg").resolve()
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"无法创建内置数据库目录 {pgdata}：{exc.strerror}。检查 WXKF_DATA_DIR 及其权限 / "
            f"cannot create the embedded database's directory: check WXKF_DATA_DIR"
        ) from exc
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); its /tmp fallback is fine.
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server  # lazily: only the embedded default needs it

            _forget_dead_users(pgdata)
            server = get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise DatabaseError(
            f"内置 PostgreSQL 启动失败（{pgdata}）：{exc}。可删除该目录下的 postmaster.pid 后重试，"
            f"或设置 DATABASE_URL 使用自己的 PostgreSQL / the embedded PostgreSQL failed to start"
        ) from exc
    _KEEP.append(server)
    uri: str = server.get_uri()
    with psycopg.connect(uri, autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        if not conn.execute(_DATABASE_EXISTS, (dbname,)).fetchone():
            # Another process (`wxkf serve` and `wxkf worker` started together) may create it
            # between our check and our CREATE: the catalog's unique index then refuses ours.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                conn.execute(f'CREATE DATABASE "{dbname}"')
    return str(server.get_uri(dbname))


_DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"


_KEEP: list[Any] = []  # the embedded server handle lives as long as the process


def _forget_dead_users(pgdata: Path) -> None:
    """Drop processes that died without saying so (kill -9, a crash) from pgserver's list of users.

    pgserver stops the server when the last process in `.handle_pids.json` exits. A process killed
    before its exit handler ran stays in the list for good, and then no later process is ever the
    last one: the server ran on after every wxkf process had exited. Done under pgserver's own lock.
    """
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import DiskList

    users = DiskList(pgdata / ".handle_pids.json")
    with PostgresServer._lock:
        pids = users.get()
        alive = [pid for pid in pids if _running(pid)]
        if alive != pids:
            users.put(alive)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def ensure_pgvector(conninfo: str) -> str:
    """Create the `vector` extension if needed; fail clearly when pgvector is missing or too old."""
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
            if row is None:
                raise DatabaseError(
                    "数据库缺少 pgvector 扩展：在数据库服务器上安装 pgvector（如 apt install "
                    "postgresql-16-pgvector）后执行 CREATE EXTENSION vector; / pgvector is not installed "
                    "on this PostgreSQL server: install it, or unset DATABASE_URL to use the embedded one"
                )
            # Created at the same moment by another process starting up: the same outcome.
            with contextlib.suppress(psycopg.errors.UniqueViolation):
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            (installed,) = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone() or ("0",)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:  # unreachable, or unreadable
        raise DatabaseError(
            f"无法连接数据库 {describe(conninfo)}：检查 DATABASE_URL、服务是否运行、用户权限 / "
            f"cannot connect to the database: {_first_line(exc)}"
        ) from exc
    except psycopg.Error as exc:
        raise DatabaseError(
            f"数据库 {describe(conninfo)} 拒绝了初始化（需要 CREATE EXTENSION vector 的权限）/ "
            f"the database refused wxkf's set-up: {_first_line(exc)}"
        ) from exc
    if _version_tuple(installed) < MIN_PGVECTOR:
        raise DatabaseError(
            f"pgvector 版本 {installed} 过旧，需要 ≥ 0.5（ALTER EXTENSION vector UPDATE;）/ "
            f"pgvector {installed} is too old; 0.5 or later is needed"
        )
    return str(installed)


async def _autocommit(conn: AsyncConnection[Any]) -> None:
    # Set per connection, not in the pool's kwargs: procrastinate reuses those kwargs for its
    # LISTEN connection and adds autocommit itself.
    await conn.set_autocommit(True)


def open_pool(conninfo: str, settings: Settings) -> Pool:
    """The process's pool (not yet open): sizes from the settings, autocommit, named connections."""
    return AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=settings.database_pool_size,
        timeout=settings.database_pool_timeout_seconds,
        kwargs={"application_name": application_name(POOL_ROLE)},
        configure=_autocommit,
        name=POOL_ROLE,
        open=False,
    )


@dataclass
class Database:
    """An open database: the process's psycopg pool, and the libpq conninfo it connects with."""

    conninfo: str
    pool: Pool

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True) -> Database:
        conninfo = await asyncio.to_thread(resolve_conninfo, settings)
        await asyncio.to_thread(ensure_pgvector, conninfo)
        if migrate:
            from wxkf.db.migrate import upgrade

            await asyncio.to_thread(upgrade, conninfo)
        pool = open_pool(conninfo, settings)
        try:
            await pool.open(wait=True, timeout=settings.database_pool_timeout_seconds)
        except psycopg.Error as exc:
            raise DatabaseError(
                f"无法连接数据库 {describe(conninfo)}：检查 DATABASE_URL、服务是否运行 / "
                f"cannot open the connection pool: {str(exc).strip().splitlines()[0]}"
            ) from exc
        return cls(conninfo=conninfo, pool=pool)

    async def close(self) -> None:
        await self.pool.close()

    def __repr__(self) -> str:
        return f"Database({describe(self.conninfo)})"


def resolve_conninfo(settings: Settings) -> str:
    if settings.database_url is not None and settings.database_url.get_secret_value():
        return to_conninfo(settings.database_url.get_secret_value())
    return start_embedded(settings.wxkf_data_dir)
