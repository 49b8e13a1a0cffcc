"""The `wxkf` command line."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from wxkf import __version__
from wxkf.agent.cli import llm_app
from wxkf.agent.kb.cli import kb_app
from wxkf.contact.cli import contact_app
from wxkf.kf.accounts_cli import accounts_app, upgrade_app
from wxkf.kf.cli import session_app as kf_session_app
from wxkf.ops.cli import doctor as doctor_command
from wxkf.ops.explain import CONTEXT_SETTINGS as EXPLAIN_CONTEXT
from wxkf.ops.explain import explain as explain_command
from wxkf.push.cli import push_app
from wxkf.simulator.cli import simulator_app
from wxkf.web.console.cli import console_app

# Commands import what they need in their bodies, so `wxkf --help`, `wxkf version` and `wxkf explain`
# start without pydantic-settings, the database, the openai SDK or FastAPI.
if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from wxkf.config import Settings

app = typer.Typer(
    help="wxkf — 微信客服 AI 客服 / AI customer service on WeChat Customer Service", no_args_is_help=True
)
db_app = typer.Typer(help="数据库 / database", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(contact_app, name="contact")
app.add_typer(simulator_app, name="simulator")
app.add_typer(llm_app, name="llm")
app.add_typer(kb_app, name="kb")
app.add_typer(push_app, name="push")
app.command("doctor")(doctor_command)
app.add_typer(kf_session_app, name="session")
app.add_typer(accounts_app, name="accounts")
app.add_typer(upgrade_app, name="upgrade")
app.add_typer(console_app, name="console")
app.command("explain", context_settings=EXPLAIN_CONTEXT)(explain_command)

console = Console()
err_console = Console(stderr=True)


def display_times() -> tuple[Callable[[datetime | None], str], str]:
    """How a CLI table shows its times (in CONTACT_TIMEZONE, as the console does), and the caption
    that says so."""
    from wxkf.clock import local_time

    zone = settings_or_exit().contact_timezone
    return (lambda value: local_time(value, zone)), f"时间为 {zone} 时间 / times in {zone}"


def settings_or_exit() -> Settings:
    """Load settings; print the problems (never the secrets) and exit 2 when they are invalid."""
    from wxkf.config import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        err_console.print(f"[red]{exc}[/red]", markup=True, highlight=False)
        raise typer.Exit(2) from None


@app.command()
def version() -> None:
    """打印版本 / print the version."""
    console.print(__version__)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="监听端口（1–65535）/ listen port (1–65535)")
    ] = 8000,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="同时运行后台任务 / also run the pipeline's jobs")
    ] = True,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="服务进程数，共用一个端口（uvicorn workers）/ server processes sharing the port",
        ),
    ] = 1,
) -> None:
    """启动服务 / run the HTTP service: callbacks, /health, /ready, /metrics, and the worker unless --no-worker.

    With --processes N, N processes share the port (uvicorn's workers: a dead one is replaced, and
    SIGTERM stops them all gracefully), each with its own database pool and, with --worker, its own
    job worker.
    """
    import uvicorn

    from wxkf import _loop
    from wxkf.ops.logging import configure_logging
    from wxkf.web.app import SERVE_WORKER_ENV, create_app

    settings = settings_or_exit()
    listener = listen_or_exit(host, port)  # before anything starts: a busy port is the whole answer
    # uvicorn shuts down gracefully on SIGTERM / SIGINT, then raises the signal again to end the
    # process the way it was asked to: these handlers make that (and a signal during start-up) a
    # normal exit, so that exit handlers run (the embedded PostgreSQL is stopped by one of them).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_normally)
    configure_logging(settings)
    database_or_exit(settings)  # a clear message, not a start-up traceback, when the database is unusable
    if processes > 1:
        # Each process builds its own app (`serve_app`), from the same environment as this one.
        os.environ[SERVE_WORKER_ENV] = "1" if worker else "0"
        uvicorn.run(
            "wxkf.web.app:serve_app", factory=True, workers=processes, host=host, port=port, log_config=None
        )
        return
    web_app = create_app(settings, run_worker=worker)
    _loop.freeze_heap()
    # log_config=None: uvicorn's lines go through wxkf's handlers (JSON, files, redaction).
    server = uvicorn.Server(uvicorn.Config(web_app, host=host, port=port, log_config=None))
    server.run(sockets=[listener])


def _exit_normally(signum: int, frame: object) -> None:
    sys.exit(0)


def listen_or_exit(host: str, port: int) -> socket.socket:
    """The server's socket, bound now; print why and exit 1 when the address cannot be used (2 when the
    port is out of range, which the commands' option bounds normally refuse first)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: no wait after a restart
    try:
        sock.bind((host, port))
    except OverflowError:
        sock.close()
        err_console.print(
            f"端口须在 1–65535 之间（收到 {port}）/ the port must be 1–65535, not {port}",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(2) from None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = (
                f"端口 {port} 已被占用：停止占用它的进程，或用 --port 换一个端口 / "
                f"port {port} on {host} is already in use: stop the other process or choose --port"
            )
        else:
            reason = (
                f"无法监听 {host}:{port}（{exc.strerror}）/ cannot listen on {host}:{port}: {exc.strerror}"
            )
        err_console.print(reason, highlight=False, markup=False)
        raise typer.Exit(1) from None
    return sock


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="并发任务数 / jobs at once (KF_WORKER_CONCURRENCY)")
    ] = None,
    stalled_after: Annotated[
        float,
        typer.Option(
            help="worker 心跳停止多少秒后接管其任务 / seconds before a dead worker's jobs are requeued"
        ),
    ] = 10.0,
) -> None:
    """运行后台任务（拉取消息、回复、发送）/ run the pipeline's jobs (sync, answer, send)."""
    from wxkf import _loop
    from wxkf.db.engine import DatabaseError
    from wxkf.kf.runtime import PipelineNotConfigured
    from wxkf.ops.logging import configure_logging
    from wxkf.service import run_worker

    settings = settings_or_exit()
    configure_logging(settings)
    try:
        _loop.run(
            run_worker(settings, concurrency=concurrency, stalled_after=stalled_after, announce=console.print)
        )
    except (DatabaseError, PipelineNotConfigured) as exc:
        err_console.print(str(exc), highlight=False)
        raise typer.Exit(1) from None


@app.command()
def demo() -> None:
    """演示 / the one-minute demo on the built-in simulator, nothing configured."""
    from wxkf.demo import run_demo

    run_demo(settings_or_exit(), console)


def database_or_exit(settings: Settings) -> str:
    """Open the database once (start the embedded one, migrate): print the fix and exit 1 if it fails."""
    from wxkf.db.engine import Database, DatabaseError, describe

    async def run() -> str:
        database = await Database.open(settings, migrate=True)
        await database.close()
        return describe(database.conninfo)

    try:
        return asyncio.run(run())
    except DatabaseError as exc:
        err_console.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(1) from None


@db_app.command("upgrade")
def db_upgrade() -> None:
    """应用数据库迁移 / apply the database migrations."""
    where = database_or_exit(settings_or_exit())
    console.print(f"✅ 数据库已是最新 / database up to date: {where}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
