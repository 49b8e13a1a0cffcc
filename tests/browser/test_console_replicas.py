"""Two `wxkf serve` processes on one database: the console on one sees, live, what arrives through the other."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from tests.browser.conftest import PASSWORD
from tests.conftest import fresh_database
from wxkf.simulator.testing import run_simulator


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(data_dir: Path, database_url: str, overrides: dict[str, object]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WECOM_", "LLM_", "DEEPSEEK_", "EMBEDDING_", "WXKF_", "KF_"))
        and k != "DATABASE_URL"
    }
    env.update({name.upper(): str(value) for name, value in overrides.items()})
    env.update(
        {
            "DATABASE_URL": database_url,
            "WXKF_DATA_DIR": str(data_dir),
            "KF_DEBOUNCE_SECONDS": "0.2",
            "KF_POLL_INTERVAL_SECONDS": "0.05",
            "KF_WELCOME_TEXT": "",
        }
    )
    return env


def _cli(env: dict[str, str], cwd: Path, *args: str, answer: str = "") -> subprocess.Popen[str]:
    """A `wxkf` process, started now; `answer` is what it reads from its standard input."""
    process = subprocess.Popen(
        [sys.executable, "-m", "wxkf.cli", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write(answer)
    process.stdin.close()
    process.stdin = None  # written and closed: communicate() has nothing more to send
    return process


def _server(env: dict[str, str], cwd: Path, port: int, flags: tuple[str, ...]) -> subprocess.Popen[bytes]:
    """`wxkf serve`; what it prints goes to a file, so no pipe can fill up and stall it."""
    with (cwd / f"serve-{port}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "wxkf.cli", "serve", "--port", str(port), *flags],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "wxkf serve did not start"
        time.sleep(0.2)


@contextmanager
def serving(env: dict[str, str], cwd: Path, *flag_sets: tuple[str, ...]) -> Iterator[list[str]]:
    """`wxkf serve` processes started together (their start-up is most of this test's time)."""
    ports = [_free_port() for _ in flag_sets]
    processes = [_server(env, cwd, port, flags) for port, flags in zip(ports, flag_sets, strict=True)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for process, url, port in zip(processes, urls, ports, strict=True):
            _wait_healthy(process, url, cwd / f"serve-{port}.log")
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)


def test_a_message_through_one_replica_shows_up_live_on_the_other(
    browser: Browser, pg_admin_uri: str, tmp_path: Path
) -> None:
    database_url = fresh_database(pg_admin_uri)
    with run_simulator() as sim:
        env = _env(tmp_path / "var", database_url, sim.settings_overrides())
        # The first admin comes from the CLI, while the servers start.
        added = _cli(env, tmp_path, "console", "add-user", "lead", "--password-stdin", answer=PASSWORD + "\n")
        with serving(env, tmp_path, ("--worker",), ("--no-worker",)) as (one, other):
            out, err = added.communicate(timeout=120)
            assert added.returncode == 0, err
            assert "已添加 admin 账号 lead" in out
            again = _cli(
                env, tmp_path, "console", "add-user", "LEAD", "--password-stdin", answer=PASSWORD + "\n"
            )
            _, err = again.communicate(timeout=120)
            assert again.returncode == 1
            assert "用户名 LEAD 已存在" in err  # names are unique whatever their case
            assert "Traceback" not in err
            sim.control.set_callback_url(f"{one}/wecom/callback")  # WeCom calls replica one only
            context = browser.new_context(locale="zh-CN")
            try:
                page = context.new_page()
                page.goto(f"{other}/console/login")
                page.fill("input[name=username]", "lead")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                expect(page.locator("#live-status.on")).to_be_visible()
                page.evaluate("window.stillTheSamePage = true")
                customer = sim.customers[0]
                sim.control.send_text(customer, "这条消息从一号进程进来")
                row = page.locator(f'tr[data-key="{sim.open_kfid} {customer}"]')
                expect(row).to_be_visible(timeout=20_000)
                assert page.evaluate("window.stillTheSamePage") is True  # pushed live, not reloaded
                page.goto(f"{other}/console/c/{sim.open_kfid}/{customer}")
                expect(page.locator("#thread")).to_contain_text("这条消息从一号进程进来")
            finally:
                context.close()  # ends the event stream before the servers stop
