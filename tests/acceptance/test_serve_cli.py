"""`wxkf serve` as an operator runs it: healthy with nothing configured, a clear refusal when it cannot start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WECOM_", "LLM_", "DEEPSEEK_", "EMBEDDING_", "WXKF_")) and k != "DATABASE_URL"
    }
    env.update({"WXKF_DATA_DIR": str(data_dir), "COLUMNS": "200", **extra})
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_with_nothing_configured_is_healthy_on_the_embedded_database(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "wxkf.cli", "serve", "--port", str(port)],
        env=_env(embedded_data_dir),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "wxkf serve did not start"
                time.sleep(0.2)
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
        components = ready.json()["components"]
        assert components["database"]["state"] == "ok"
        # Nothing configured: WeCom is reported as not set up, not as a crash.
        assert components["wecom_token"]["state"] == "disabled"
        assert components["job_workers"]["state"] == "ok"
        # Nothing loaded: the knowledge base is said to be empty, with the command that fills it.
        assert components["knowledge_base"]["state"] == "degraded"
        assert "wxkf kb add" in components["knowledge_base"]["fix"]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "the knowledge base is empty" in output.decode()
    assert "the WeCom callback is not configured" in output.decode()
    assert (embedded_data_dir / "pg").is_dir()  # the embedded PostgreSQL lives in the data dir
    # ... and stops with the last process that used it (issue 12, defect 10).
    assert not (embedded_data_dir / "pg" / "postmaster.pid").exists()


def test_the_embedded_database_stops_with_the_last_process_even_after_a_kill_9(
    embedded_data_dir: Path,
) -> None:
    """A process killed -9 never said it was done with the server; it must not keep it running."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from wxkf.db.engine import start_embedded; "
            "start_embedded(__import__('pathlib').Path(sys.argv[1])); print('up', flush=True); time.sleep(600)",
            str(embedded_data_dir),
        ],
        env=_env(embedded_data_dir),
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    with holder.stdout:
        assert holder.stdout.readline() == b"up\n"
    holder.kill()
    holder.wait()
    assert (embedded_data_dir / "pg" / "postmaster.pid").exists()  # the killed one left it running
    done = subprocess.run(
        [sys.executable, "-m", "wxkf.cli", "db", "upgrade"],
        env=_env(embedded_data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (embedded_data_dir / "pg" / "postmaster.pid").exists()


def test_serve_refuses_an_unusable_database_with_the_fix_and_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wxkf.cli", "serve", "--port", str(_free_port())],
        env=_env(tmp_path / "var", DATABASE_URL="postgresql://nobody:hunter2secret@127.0.0.1:1/wxkf"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert "DATABASE_URL" in output
    assert "Traceback" not in output
    assert "hunter2secret" not in output


def test_serve_refuses_invalid_settings_naming_the_variable(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wxkf.cli", "serve"],
        env=_env(tmp_path / "var", WECOM_AES_KEY="too-short", WECOM_KF_SECRET="kf-secret-value"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2
    assert "WECOM_AES_KEY" in output
    assert "kf-secret-value" not in output
    assert "Traceback" not in output


def test_serve_on_a_port_in_use_says_so_and_exits_before_starting_anything(embedded_data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "wxkf.cli", "serve", "--port", str(port)],
            env=_env(embedded_data_dir),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"{port}" in output
    assert "already in use" in output
    assert "Traceback" not in output
    assert time.monotonic() - started < 20
    assert not (embedded_data_dir / "pg").exists()  # the embedded database was never started


def test_serve_honours_sigterm_while_its_jobs_hang_on_wecom(database_url: str, tmp_path: Path) -> None:
    """A sync job blocked on a WeCom that accepts connections and never answers."""
    import asyncio

    import procrastinate
    import psycopg

    from wxkf.kf import jobs

    async def queue_sync() -> None:
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=database_url))
        jobs.register_tasks(app)
        async with app.open_async():
            await jobs.defer_sync(app, "wkHANG")

    asyncio.run(queue_sync())
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(100)  # never accepted: every request waits for its timeout
        wecom = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
        process = subprocess.Popen(
            [sys.executable, "-m", "wxkf.cli", "serve", "--port", str(_free_port())],
            env=_env(
                tmp_path / "var",
                DATABASE_URL=database_url,
                WECOM_CORP_ID="wwHANG",
                WECOM_KF_SECRET="kf-secret-hang",
                WECOM_API_BASE=wecom,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                with psycopg.connect(database_url) as conn:
                    row = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")
                    if row.fetchone() == (1,):
                        break
                assert process.poll() is None
                assert time.monotonic() < deadline, "the sync job never started"
                time.sleep(0.2)
            stopped_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert time.monotonic() - stopped_at < 25
    assert process.returncode == 0, output.decode()
    assert b"Traceback" not in output
