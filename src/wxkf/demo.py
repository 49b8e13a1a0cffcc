"""`wxkf demo`: start wxkf on the embedded default and show that it is healthy."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import uvicorn
from rich.console import Console

from wxkf.config import Settings
from wxkf.web.app import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BackgroundServer:
    """Run an ASGI app with uvicorn in a daemon thread on 127.0.0.1 (demo and tests)."""

    def __init__(self, app: object, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")  # type: ignore[arg-type]
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


def run_demo(settings: Settings, console: Console) -> None:
    console.print(
        "[bold]wxkf demo[/bold] — 内置 PostgreSQL，无需任何配置 / embedded PostgreSQL, nothing configured"
    )
    with BackgroundServer(create_app(settings)) as server:
        health = httpx.get(f"{server.url}/health", timeout=10).json()
        console.print(f"✅ 服务已启动 / server up at {server.url} — /health → {health}")
