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


@contextmanager
def serving(env: dict[str, str], cwd: Path, *flags: str) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "wxkf.cli", "serve", "--port", str(port), *flags],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "wxkf serve did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def test_a_message_through_one_replica_shows_up_live_on_the_other(
    browser: Browser, pg_admin_uri: str, tmp_path: Path
) -> None:
    database_url = fresh_database(pg_admin_uri)
    with run_simulator() as sim:
        env = _env(tmp_path / "var", database_url, sim.settings_overrides())
        added = subprocess.run(
            [sys.executable, "-m", "wxkf.cli", "console", "add-user", "lead", "--password-stdin"],
            input=PASSWORD + "\n",
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert added.returncode == 0, added.stderr
        assert "已添加 admin 账号 lead" in added.stdout
        again = subprocess.run(
            [sys.executable, "-m", "wxkf.cli", "console", "add-user", "LEAD", "--password-stdin"],
            input=PASSWORD + "\n",
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert again.returncode == 1
        assert "用户名 LEAD 已存在" in again.stderr  # names are unique whatever their case
        assert "Traceback" not in again.stderr
        with serving(env, tmp_path, "--worker") as one, serving(env, tmp_path, "--no-worker") as other:
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
