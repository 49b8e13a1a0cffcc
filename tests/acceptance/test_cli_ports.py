"""`--port` as an operator mistypes it: out of range is a usage error before anything starts, and a busy
port gets the same bilingual refusal from `wxkf simulator` as from `wxkf serve` — never a traceback,
never a hang."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.test_serve_cli import _env

COMMANDS = {"serve": ["serve"], "simulator": ["simulator"], "llm fake-server": ["llm", "fake-server"]}


def _wxkf(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wxkf.cli", *args],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,  # a hang is a failure, not a stuck run
        check=False,
    )


@pytest.mark.parametrize("port", ["0", "-1", "70000"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_out_of_range_port_is_a_usage_error_before_anything_starts(
    command: str, port: str, tmp_path: Path
) -> None:
    done = _wxkf([*COMMANDS[command], "--port", port], tmp_path / "var")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "--port" in output
    assert "Invalid value for '--port'" in output
    assert "Traceback" not in output
    assert "OverflowError" not in output
    assert "WECOM_" not in output  # the simulator printed no banner
    assert not (tmp_path / "var" / "pg").exists()  # the embedded database was never started


def test_the_simulator_on_a_port_in_use_says_so_before_its_banner(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _wxkf(["simulator", "--port", str(port)], tmp_path / "var")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""  # no banner: its credentials would be of no use
    message = done.stderr.strip()
    assert message.startswith(f"端口 {port} 已被占用"), message
    assert f"port {port} on 127.0.0.1 is already in use" in message
    assert "Errno" not in message
    assert "ERROR" not in message
    assert "Traceback" not in message


def test_the_simulator_and_serve_word_a_busy_port_alike(tmp_path: Path, embedded_data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        simulator = _wxkf(["simulator", "--port", port], tmp_path / "var")
        serve = _wxkf(["serve", "--port", port], embedded_data_dir)
    assert (simulator.returncode, serve.returncode) == (1, 1)
    assert simulator.stderr.strip() == serve.stderr.strip()


def test_a_listening_simulator_has_bound_before_its_banner(tmp_path: Path) -> None:
    """The banner means the port is the simulator's: a client may connect as soon as it is printed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "wxkf.cli", "simulator", "--port", str(port)],
        env=_env(tmp_path / "var"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert b"simulator" in first, first
        with socket.socket() as taken, pytest.raises(OSError, match="in use"):
            taken.bind(("127.0.0.1", port))
    finally:
        process.terminate()
        process.communicate(timeout=30)
