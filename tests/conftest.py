"""Shared fixtures: one embedded PostgreSQL per test session, a fresh database per test.

The migrated schema is built once into a template database; each test that needs a database gets
`CREATE DATABASE … TEMPLATE`, which takes milliseconds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from wxkf.config import Settings

# Settings must come from the tests, not from a developer's environment or .env.
for _name in list(os.environ):
    if _name.startswith(("WECOM_", "LLM_", "DEEPSEEK_", "EMBEDDING_", "WXKF_")) or _name == "DATABASE_URL":
        del os.environ[_name]
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())

TEMPLATE_DB = "wxkf_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin_uri() -> Iterator[str]:
    """A private PostgreSQL for the whole session, with the migrated template database."""
    from pgserver.postgres_server import get_server

    from wxkf.db.engine import ensure_pgvector
    from wxkf.db.migrate import upgrade

    pgdata = Path(tempfile.mkdtemp(prefix="wxkf-pg-"))
    server = get_server(pgdata, cleanup_mode="delete")
    admin: str = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    template_uri: str = server.get_uri(TEMPLATE_DB)
    ensure_pgvector(template_uri)
    upgrade(template_uri)
    yield admin
    server.cleanup()


def fresh_database(admin_uri: str) -> str:
    """Create a new database from the migrated template; return its URI."""
    name = f"t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    return admin_uri.replace("/postgres?", f"/{name}?", 1)


@pytest.fixture
def database_url(pg_admin_uri: str) -> str:
    return fresh_database(pg_admin_uri)


@pytest.fixture
def settings_factory(database_url: str, tmp_path: Path) -> Any:
    """Build Settings for a test: a fresh database, a temp data dir, no .env."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": database_url, "wxkf_data_dir": tmp_path / "var"}
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture(scope="session")
def e5_embedder() -> Any:
    """e5, a part of the offline default; its model loads once per process, so once per test session."""
    from wxkf.agent.kb.embedders import E5Embedder

    return E5Embedder()


@pytest.fixture(scope="session")
def default_embedder() -> Any:
    """The offline default (`KB_EMBEDDER` unset: e5+use), as `wxkf serve` makes it."""
    from wxkf.agent.kb.embedders import make_embedder

    return make_embedder(Settings(_env_file=None))


@pytest.fixture
async def database(database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    from wxkf.db.engine import Database

    db = await Database.open(
        Settings(_env_file=None, database_url=database_url, wxkf_data_dir=tmp_path / "var"), migrate=False
    )
    yield db
    await db.close()


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """A WXKF_DATA_DIR for tests that start the embedded PostgreSQL themselves.

    Outside pytest's basetemp on purpose: as root, pgserver runs PostgreSQL as its own user and opens
    up the data dir's parents for it, and pytest resets the mode of its shared basetemp root.
    """
    path = Path(tempfile.mkdtemp(prefix="wxkf-data-"))
    yield path / "var"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def sim() -> AsyncIterator[Any]:
    """The WeCom simulator with its seeded world, on a free port (`wxkf.simulator.testing`)."""
    from wxkf.simulator.testing import run_simulator

    async with run_simulator() as handle:
        yield handle


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what a test's `configure_logging` added to the root logger."""
    import logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    httpx_level = logging.getLogger("httpx").level  # `configure_logging` sets it too
    yield
    logging.getLogger("httpx").setLevel(httpx_level)
    for handler in list(root.handlers):
        if handler not in saved[0]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved[1])


@contextlib.contextmanager
def serve_handler(base: type[BaseHTTPRequestHandler]) -> Iterator[tuple[str, Any]]:
    """Serve a fresh subclass of `base` on 127.0.0.1 in a thread; yield (url, the subclass).

    The subclass is per server, so a test can set class attributes on it without touching others.
    """
    handler = type("Handler", (base,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True  # a kept-alive connection must not hold up the shutdown
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
