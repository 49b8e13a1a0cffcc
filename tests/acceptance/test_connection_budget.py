"""What each process holds in pg_stat_activity: its one pool, and beside it only the job worker's
LISTEN connection and the callback writer's (`wxkf.db.budget`), at idle and under load.

Real processes, as deployed: `wxkf serve --processes 2` (each with its job worker) and a separate
`wxkf worker`, answering the simulator's customers with the agent's own responder. The customers
greet, which the offline responder answers without the knowledge base: the knowledge base, the
memory and the tool audit still query through SQLAlchemy's engine, whose connections carry no
name, until the agent moves to the pool; then the customers ask a question here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import psycopg

from wxkf.db.budget import wxkf_process
from wxkf.simulator.testing import run_simulator

POOL_SIZE = 4
CUSTOMERS = 12


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def held(database_url: str) -> tuple[Counter[tuple[str, int]], list[str]]:
    """(role, pid) → connections to the database, and the names of connections no wxkf process owns."""
    with psycopg.connect(database_url, application_name="budget-test") as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchall()
    roles: Counter[tuple[str, int]] = Counter()
    strangers = []
    for (name,) in rows:
        process = wxkf_process(name)
        if process is None:
            strangers.append(name)
        else:
            roles[(name.split(":", 1)[0], int(process.rsplit(":", 1)[1]))] += 1
    return roles, strangers


async def until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.1)


def check(roles: Counter[tuple[str, int]], serving: set[int], working: set[int]) -> None:
    for pid in serving | working:
        assert 1 <= roles[("wxkf", pid)] <= POOL_SIZE, (pid, roles)
        assert roles[("wxkf-listen", pid)] == 1, (pid, roles)
        assert roles[("wxkf-callbacks", pid)] <= (1 if pid in serving else 0), (pid, roles)
    assert {pid for _, pid in roles} == serving | working, roles


async def test_each_process_holds_its_pool_and_at_most_two_connections_beside_it(
    database_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    async with run_simulator(callback_url=f"http://127.0.0.1:{port}/wecom/callback") as sim:
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("WECOM_", "WXKF_", "DATABASE_", "KF_"))
            },
            **{k.upper(): str(v) for k, v in sim.settings_overrides().items()},
            "DATABASE_URL": database_url,
            "WXKF_DATA_DIR": str(tmp_path / "var"),
            "DATABASE_POOL_SIZE": str(POOL_SIZE),
            "KF_DEBOUNCE_SECONDS": "0",
            "KF_POLL_INTERVAL_SECONDS": "0.05",
        }
        cli = [sys.executable, "-m", "wxkf.cli"]
        log = (tmp_path / "processes.log").open("wb")
        serve = subprocess.Popen(
            [*cli, "serve", "--port", str(port), "--processes", "2"], env=env, stdout=log, stderr=log
        )
        worker = subprocess.Popen([*cli, "worker"], env=env, stdout=log, stderr=log)
        try:

            def pids() -> tuple[set[int], set[int]]:
                children = psutil.Process(serve.pid).children()
                serving = {c.pid for c in children if any("spawn_main" in a for a in c.cmdline())}
                return serving, {worker.pid}

            async def started() -> bool:
                roles, _ = held(database_url)
                return sum(1 for role, _ in roles if role == "wxkf-listen") == 3

            await until(started, 90)
            serving, working = pids()
            roles, strangers = held(database_url)
            check(roles, serving, working)
            assert strangers == []

            # Under load: every customer writes at once; sampled while they are answered.
            peak: Counter[tuple[str, int]] = Counter()
            seen_strangers: list[str] = []
            customers = sim.customers[:CUSTOMERS]
            await asyncio.gather(*(asyncio.to_thread(sim.control.send_text, c, "你好") for c in customers))

            async def answered() -> bool:
                roles, strangers = held(database_url)
                peak.update({k: v - peak[k] for k, v in roles.items() if v > peak[k]})
                seen_strangers.extend(strangers)
                received = await asyncio.gather(
                    *(asyncio.to_thread(sim.control.received, c) for c in customers)
                )
                return all(received)

            await until(answered, 120)
            check(peak, serving, working)
            assert seen_strangers == []
        finally:
            for process in (serve, worker):
                process.send_signal(signal.SIGTERM)
            for process in (serve, worker):
                process.wait(60)
            log.close()
