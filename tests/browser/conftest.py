"""Browser tests: the console in Debian's Chromium, driven by Playwright, against the whole service.

One browser and one server for the package (package scope: Playwright's sync API keeps an event loop
running on the main thread while it is open, which the async tests after these must not meet): the simulator plays WeCom, the local fake OpenAI server
plays the LLM, wxkf runs for real (callback route, worker, console) on a database of its own. Each
test gets a fresh browser context (its own cookies); closing it ends the page's event stream.

Chromium comes from Debian (`make browser` installs it); Playwright never downloads a browser.
Screenshots go to $CONSOLE_SCREENSHOT_DIR (`make screenshots` points it at docs/console/).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.conftest import fresh_database
from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.config import Settings
from wxkf.demo import BackgroundServer
from wxkf.simulator.testing import SimulatorHandle, run_simulator
from wxkf.web.app import create_app

ADMIN, AGENT, PASSWORD = "admin", "agent", "correct-horse-battery"
# What this closed network needs (/work machine notes): no sandbox as root, and none of Chromium's
# background connections, which would be refused, many at a time.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError(
            "没有找到 Debian 的 Chromium：运行 make browser（apt-get install chromium fonts-wqy-microhei）/ "
            "Debian's chromium is missing: run make browser"
        )
    return path


@dataclass
class Console:
    """The running service as a test sees it."""

    base_url: str
    sim: SimulatorHandle
    llm: FakeOpenAI
    conninfo: str
    screenshots: Path

    def say(self, customer: str, text: str) -> None:
        self.sim.control.send_text(customer, text)

    def received(self, customer: str) -> list[str]:
        return [
            r["text"]["content"] for r in self.sim.control.received(customer) if r.get("via") == "send_msg"
        ]

    def until(self, check: Callable[[], Any], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            time.sleep(0.05)

    def url(self, path: str) -> str:
        return self.base_url + path

    def conversation(self, customer: str) -> str:
        return self.url(f"/console/c/{self.sim.open_kfid}/{customer}")

    def screenshot(self, page: Page, name: str) -> Path:
        path = self.screenshots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000  # a rendered page, not a blank one
        return path


@pytest.fixture(scope="package")
def console(pg_admin_uri: str) -> Iterator[Console]:
    import asyncio

    import psycopg

    from wxkf.web.console.auth import add_user

    database_url = fresh_database(pg_admin_uri)
    data_dir = Path(tempfile.mkdtemp(prefix="wxkf-browser-"))
    shots = Path(os.environ.get("CONSOLE_SCREENSHOT_DIR") or data_dir / "screenshots").resolve()
    shots.mkdir(parents=True, exist_ok=True)

    async def users() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await add_user(conn, ADMIN, PASSWORD, "admin")
            await add_user(conn, AGENT, PASSWORD, "agent")

    asyncio.run(users())
    with run_simulator(customers=8) as sim, FakeOpenAI(api_key="sk-browser") as llm:
        settings = Settings(
            _env_file=None,
            database_url=database_url,
            wxkf_data_dir=data_dir / "var",
            llm_api_key="sk-browser",
            llm_base_url=llm.base_url,
            llm_max_retries=0,
            kf_debounce_seconds=0.2,
            kf_poll_interval_seconds=0.05,
            kf_welcome_text="",
            push_quiet_hours="",  # the browser tests run at any hour: no quiet hours hold a push
            **sim.settings_overrides(),
        )
        with BackgroundServer(create_app(settings, run_worker=True)) as server:
            sim.control.set_callback_url(f"{server.url}/wecom/callback")
            yield Console(server.url, sim, llm, database_url, shots)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="package")
def playwright(console: Console) -> Iterator[Playwright]:
    # After `console`: Playwright's sync API keeps an event loop running on this thread, so the
    # server (and its asyncio.run) must be up first.
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="zh-CN")
    context.set_default_timeout(15_000)
    # An answer on the page waits for the pipeline (and, in the suite, for the other test process):
    # the same bound as actions, not playwright's 5 s.
    expect.set_options(timeout=15_000)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def log_in(page: Page, console: Console, username: str = ADMIN, password: str = PASSWORD) -> None:
    page.goto(console.url("/console/login"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/conversations")
