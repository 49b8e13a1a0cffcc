"""Real wxkf processes for acceptance tests: a PostgreSQL of the test's own, `wxkf worker` and `wxkf serve`.

    with PrivatePostgres() as pg:
        conninfo = pg.database("wxkf")        # created and migrated
        pg.stop(); pg.start()                 # an outage: every connection breaks
        worker = start_wxkf(["worker"], wxkf_env(conninfo, sim, llm), log)

The private server is a second pgserver cluster (about 2 s to create), so a test may stop it
without touching the session's shared one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from wxkf.simulator.testing import SimulatorHandle


class PrivatePostgres:
    def __init__(self) -> None:
        from pgserver.postgres_server import get_server

        self._root = Path(tempfile.mkdtemp(prefix="wxkf-pgx-"))  # short: the socket path is limited
        self._server = get_server(self._root / "pg", cleanup_mode="delete")

    def __enter__(self) -> PrivatePostgres:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.start()  # cleanup stops a running server; a stopped one leaves a stale pid behind
        self._server.cleanup()
        shutil.rmtree(self._root, ignore_errors=True)

    def uri(self, dbname: str = "postgres") -> str:
        return str(self._server.get_uri(dbname))

    def database(self, dbname: str) -> str:
        """Create `dbname` with wxkf's schema; returns its URI."""
        from wxkf.db.engine import ensure_pgvector
        from wxkf.db.migrate import upgrade

        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        uri = self.uri(dbname)
        ensure_pgvector(uri)
        upgrade(uri)
        return uri

    def stop(self) -> None:
        """Stop the server (fast shutdown: every session is terminated, as in a restart)."""
        from pgserver.postgres_server import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=self._server.pgdata, user=self._server.system_user)

    def start(self) -> None:
        from pgserver.postgres_server import PostgresServer

        with PostgresServer._lock:
            self._server.ensure_postgres_running()


def wxkf_env(conninfo: str, sim: SimulatorHandle, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a wxkf process pointed at `conninfo` and the simulator."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WECOM_", "KF_", "WXKF_", "LLM_", "DEEPSEEK_", "EMBEDDING_"))
        and k != "DATABASE_URL"
    }
    return {
        **inherited,
        "DATABASE_URL": conninfo,
        "WXKF_DATA_DIR": str(data_dir),
        "KF_DEBOUNCE_SECONDS": "0.2",
        "KF_POLL_INTERVAL_SECONDS": "0.05",
        **{k.upper(): str(v) for k, v in sim.settings_overrides().items()},
        **extra,
    }


def start_wxkf(args: list[str], env: dict[str, str], log: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """`wxkf <args>` with its output appended to `log`."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "wxkf.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT, **popen
        )
