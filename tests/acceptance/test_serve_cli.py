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
    assert "the knowledge base is empty" in output.decode()
    assert (embedded_data_dir / "pg").is_dir()  # the embedded PostgreSQL lives in the data dir


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
