"""`wxkf serve --processes 2`: two processes on one port, each with its own pool and job worker,
and SIGTERM stops them all, their connections closed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]
import psycopg

from wxkf.db.budget import wxkf_process


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def connections(database_url: str) -> Counter[tuple[str, str]]:
    """(role, "<host>:<pid>") → connections, for every wxkf connection to the database."""
    with psycopg.connect(database_url) as conn:
        names = conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
    found: Counter[tuple[str, str]] = Counter()
    for (name,) in names:
        process = wxkf_process(name)
        if process is not None:
            found[(name.split(":", 1)[0], process)] += 1
    return found


def test_two_processes_share_the_port_each_with_its_pool_and_worker_and_stop_on_sigterm(
    database_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "WXKF_", "DATABASE_"))},
        "DATABASE_URL": database_url,
        "WXKF_DATA_DIR": str(tmp_path / "var"),
        "DATABASE_POOL_SIZE": "4",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "wxkf.cli", "serve", "--port", str(port), "--processes", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        children: set[int] = set()
        while True:
            assert server.poll() is None, log.read_text()
            children = {child.pid for child in psutil.Process(server.pid).children(recursive=True)}
            found = connections(database_url)
            listeners = {p for (role, p), _ in found.items() if role == "wxkf-listen"}
            if len(listeners) == 2:
                break
            assert time.monotonic() < deadline, (found, log.read_text())
            time.sleep(0.2)
        # Both answer on the one port; every request is served by one of them.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert all(http.get("/health").status_code == 200 for _ in range(20))
            assert http.get("/ready").json()["components"]["job_workers"]["alive"] == 2
        found = connections(database_url)
        processes = {p for _, p in found}
        assert len(processes) == 2
        assert {int(p.rsplit(":", 1)[1]) for p in processes} <= children  # the serve processes' own
        for process in processes:
            assert 1 <= found[("wxkf", process)] <= 4  # DATABASE_POOL_SIZE
            assert found[("wxkf-listen", process)] == 1
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    assert code == 0, log.read_text()
    deadline = time.monotonic() + 10  # a backend ends moments after its client closed the socket
    while connections(database_url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not connections(database_url)
