"""Scaling out on one PostgreSQL: 1, 2 and 3 processes, as ratios to 1, with the database's CPU.

Every part is its own process, as deployed: a private PostgreSQL (pgserver), the simulator
(`wxkf simulator`), `wxkf serve` and the workers. For each n in 1, 2, 3:

A. Callbacks/s: `wxkf serve --processes n --no-worker` (the real CLI), signed kf callbacks in a
   closed loop at concurrency CONCURRENCY, ROUNDS rounds of ACK_ROUND, median.
B. End to end: CUSTOMERS customers write once while no worker runs (`wxkf serve --no-worker`
   records the callbacks); then n worker processes (`bench_pipeline.py --worker`: `wxkf worker`'s
   pipeline with an instant responder, so the figure is the pipeline's) answer them all.
   messages/s from the first to the last send_msg.

For both: CPU of the database (postmaster and every backend, exited ones included) and of the wxkf
processes over the measured span, in cores; per process RSS and connections (pg_stat_activity, by
the application_name each connection carries) at idle and the most seen under load. Last, what the
database holds per answered message: rows and bytes (tables and their indexes) per message.

    .venv/bin/python benchmarks/bench_scaling.py [--processes 1,2,3] [--customers 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import psycopg

from bench_pipeline import (
    LoadClient,
    closed_loop,
    control_pool,
    envelopes,
    free_port,
    query,
    wait_http,
    wait_until,
)
from wxkf import _loop
from wxkf.db.budget import wxkf_process
from wxkf.db.engine import ensure_pgvector, start_embedded
from wxkf.db.migrate import upgrade
from wxkf.simulator.seed import seed_world
from wxkf.simulator.testing import handle_for

SEED = 20240101
ACK_ROUND = 3000
ROUNDS = 3
SAMPLE_SECONDS = 0.25
HERE = Path(__file__).parent

TABLES = (
    "kf_callback_events",
    "kf_inbound",
    "kf_outbox",
    "kf_conversations",
    "kf_sync_cursors",
    "kf_counters",
)


def cpu(process: psutil.Process, *, children_reaped: bool = False) -> float:
    """User + system seconds of a process (and of the children it has reaped, when asked)."""
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    total = float(times.user + times.system)
    if children_reaped:
        total += float(times.children_user + times.children_system)
    return total


class Probe:
    """One connection kept open for the bench's own queries: a connection per poll would cost the
    database more CPU (a backend forked and authenticated each time) than the queries it runs."""

    def __init__(self, conninfo: str) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True, application_name="bench-probe")

    def __call__(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, params).fetchall())

    def close(self) -> None:
        self.conn.close()


class Database:
    """The postmaster of the private PostgreSQL: CPU of it and all its backends, reaped ones too."""

    def __init__(self, data_dir: Path) -> None:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        self.postmaster = psutil.Process(pid)

    def cpu(self) -> float:
        live = sum(cpu(child) for child in self.postmaster.children())
        return cpu(self.postmaster, children_reaped=True) + live


@dataclass
class Sampler:
    """RSS and database connections of the processes under test, sampled while a part runs."""

    conninfo: str
    processes: list[psutil.Process]
    probe: Probe | None = None
    rss: dict[int, int] = field(default_factory=dict)  # pid → most bytes seen
    connections: dict[int, int] = field(default_factory=dict)  # pid → most connections seen
    task: asyncio.Task[None] | None = None

    def sample(self) -> tuple[dict[int, int], dict[int, int]]:
        rss = {}
        for process in self.processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                rss[process.pid] = int(process.memory_info().rss)
        held: Counter[int] = Counter()
        if self.probe is None:
            self.probe = Probe(self.conninfo)
        for (name,) in self.probe("SELECT application_name FROM pg_stat_activity"):
            owner = wxkf_process(str(name or ""))
            if owner is not None:
                held[int(owner.rsplit(":", 1)[1])] += 1
        return rss, {process.pid: held[process.pid] for process in self.processes}

    async def _run(self) -> None:
        while True:
            rss, held = await asyncio.to_thread(self.sample)
            for pid, value in rss.items():
                self.rss[pid] = max(self.rss.get(pid, 0), value)
            for pid, value in held.items():
                self.connections[pid] = max(self.connections.get(pid, 0), value)
            await asyncio.sleep(SAMPLE_SECONDS)

    def __enter__(self) -> Sampler:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        if self.probe is not None:
            self.probe.close()


def snapshot(conninfo: str, processes: list[psutil.Process]) -> tuple[dict[int, int], dict[int, int]]:
    """RSS and connections of `processes` now."""
    sampler = Sampler(conninfo, processes)
    try:
        return sampler.sample()
    finally:
        if sampler.probe is not None:
            sampler.probe.close()


def describe(rss: dict[int, int], connections: dict[int, int]) -> str:
    mib = [value / 2**20 for value in rss.values()]
    return (
        f"RSS {min(mib):.0f}–{max(mib):.0f} MiB, connections {min(connections.values())}–"
        f"{max(connections.values())} per process"
    )


@dataclass
class Deployment:
    """The long-lived parts (database, simulator) and the environment every wxkf process gets."""

    tmp: Path
    conninfo: str
    database: Database
    env: dict[str, str]
    sim: str
    app_port: int
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *argv: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            list(argv), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.started.append(process)
        return process

    def serve(self, processes: int) -> subprocess.Popen[bytes]:
        return self.start(
            sys.executable, "-m", "wxkf.cli", "serve", "--port", str(self.app_port),
            "--processes", str(processes), "--no-worker",
        )  # fmt: skip

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        process.terminate()
        process.wait(60)
        self.started.remove(process)

    def wxkf_processes(self, parent: subprocess.Popen[bytes], n: int) -> list[psutil.Process]:
        """The processes that hold the pools: the serve command itself, or uvicorn's workers under it
        (spawned by multiprocessing, beside its resource tracker)."""
        root = psutil.Process(parent.pid)
        if n == 1:
            return [root]
        return [c for c in root.children() if any("spawn_main" in part for part in c.cmdline())]


async def part_a(deploy: Deployment, n: int, handle: Any) -> dict[str, Any]:
    serve = deploy.serve(n)
    base = f"http://127.0.0.1:{deploy.app_port}"
    await wait_http(f"{base}/health")
    await asyncio.sleep(2)  # every process up and idle
    processes = deploy.wxkf_processes(serve, n)
    while len(processes) < n:
        await asyncio.sleep(0.2)
        processes = deploy.wxkf_processes(serve, n)
    idle = snapshot(deploy.conninfo, processes)
    client = LoadClient(base)
    rates: list[float] = []
    try:
        await closed_loop(client, envelopes(handle.crypto(), handle.corp_id, handle.open_kfid, f"w{n}-", 500))
        with Sampler(deploy.conninfo, processes) as loaded:
            db0, app0, t0 = deploy.database.cpu(), sum(cpu(p) for p in processes), time.perf_counter()
            for r in range(ROUNDS):
                batch = envelopes(handle.crypto(), handle.corp_id, handle.open_kfid, f"a{n}-{r}-", ACK_ROUND)
                rates.append(await closed_loop(client, batch))
            db1, app1, t1 = deploy.database.cpu(), sum(cpu(p) for p in processes), time.perf_counter()
    finally:
        client.close()
    deploy.stop(serve)
    with psycopg.connect(deploy.conninfo, autocommit=True) as conn:  # fake tokens: nothing to sync
        conn.execute("DELETE FROM kf_callback_events")
        conn.execute("DELETE FROM procrastinate_jobs")
    return {
        "per_s": statistics.median(rates),
        "db_cores": (db1 - db0) / (t1 - t0),
        "app_cores": (app1 - app0) / (t1 - t0),
        "idle": describe(*idle),
        "load": describe(loaded.rss, loaded.connections),
    }


def bench_worker(deploy: Deployment) -> subprocess.Popen[bytes]:
    return deploy.start(sys.executable, str(HERE / "bench_pipeline.py"), "--worker")


async def worker_idle(deploy: Deployment, n: int) -> str:
    """RSS and connections of n workers started on an empty queue, once they settled."""
    workers = [bench_worker(deploy) for _ in range(n)]
    processes = [psutil.Process(w.pid) for w in workers]

    def registered() -> bool:
        return int(query(deploy.conninfo, "SELECT count(*) FROM procrastinate_workers")[0][0]) >= n

    await wait_until(registered, 60)
    await asyncio.sleep(2)
    idle = snapshot(deploy.conninfo, processes)
    for worker in workers:
        deploy.stop(worker)
    with psycopg.connect(deploy.conninfo, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_workers")
    return describe(*idle)


async def part_b(deploy: Deployment, n: int, customers: list[str], open_kfid: str) -> dict[str, Any]:
    idle = await worker_idle(deploy, n)
    serve = deploy.serve(1)
    await wait_http(f"http://127.0.0.1:{deploy.app_port}/health")
    calls = [
        (
            f"/sim/customers/{c}/messages",
            {"open_kfid": open_kfid, "msgtype": "text", "body": {"content": "价格"}},
        )
        for c in customers
    ]
    await control_pool(deploy.sim, calls)
    async with httpx.AsyncClient(base_url=deploy.sim, timeout=90) as client:
        await client.post("/sim/callbacks/wait", json={"timeout": 60})
    probe = Probe(deploy.conninfo)

    def sent() -> int:
        return int(probe("SELECT count(*) FROM kf_outbox WHERE status = 'sent'")[0][0])

    before = sent()
    target = before + len(customers)

    workers = [bench_worker(deploy) for _ in range(n)]
    processes = [psutil.Process(w.pid) for w in workers]
    with Sampler(deploy.conninfo, processes) as loaded:
        await wait_until(lambda: sent() > before, 120)
        db0, app0, t0 = deploy.database.cpu(), sum(cpu(p) for p in processes), time.perf_counter()
        await wait_until(lambda: sent() >= target, 900)
        db1, app1, t1 = deploy.database.cpu(), sum(cpu(p) for p in processes), time.perf_counter()
    [(span,)] = probe(
        "SELECT extract(epoch FROM max(sent_at) - min(sent_at)) FROM kf_outbox WHERE external_userid = ANY(%s)",
        customers,
    )
    probe.close()
    for worker in workers:
        deploy.stop(worker)
    deploy.stop(serve)
    with psycopg.connect(deploy.conninfo, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_workers")
    return {
        "per_s": (len(customers) - 1) / float(span),
        "db_cores": (db1 - db0) / (t1 - t0),
        "app_cores": (app1 - app0) / (t1 - t0),
        "idle": idle,
        "load": describe(loaded.rss, loaded.connections),
    }


def per(result: dict[str, Any], cores: str) -> str:
    """CPU milliseconds per unit (callback or message): less sensitive to a shared machine than rates."""
    return f"{result[cores] / result['per_s'] * 1000:.2f} ms each"


def storage(conninfo: str) -> Iterator[str]:
    """Rows and bytes (with indexes and TOAST) per answered message, per table.

    The tables are rewritten first (VACUUM FULL): part A's deleted callbacks would count otherwise.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"VACUUM FULL ANALYZE {table}")
    [(messages,)] = query(conninfo, "SELECT count(*) FROM kf_inbound WHERE status = 'answered'")
    for table in TABLES:
        [(rows, size)] = query(conninfo, f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}")
        yield (
            f"   {table}: {int(rows) / int(messages):.3f} rows and {int(size) / int(messages):,.0f} bytes per message "
            f"({int(rows):,} rows, {int(size) / 2**20:.1f} MiB)"
        )


async def main(counts: list[int], customers_per_run: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wxkf-scale-"))
    conninfo = start_embedded(tmp)
    ensure_pgvector(conninfo)
    upgrade(conninfo)
    total = customers_per_run * len(counts)
    world = seed_world(seed=SEED, customers=total)
    sim_port, app_port = free_port(), free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    handle = handle_for(sim, world)
    handle.control.close()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("WECOM_", "KF_", "WXKF_", "LLM_", "DATABASE_"))
        },
        **{k.upper(): str(v) for k, v in handle.settings_overrides().items()},
        "DATABASE_URL": conninfo,
        "WXKF_DATA_DIR": str(tmp / "var"),
        "LOG_LEVEL": "WARNING",
        "KF_DEBOUNCE_SECONDS": "0",
        "KF_POLL_INTERVAL_SECONDS": "0.1",
        "KF_CLOSING_HINT": "",
    }
    deploy = Deployment(tmp, conninfo, Database(tmp / "pg"), env, sim, app_port)
    deploy.start(
        sys.executable, "-m", "wxkf.cli", "simulator", "--port", str(sim_port), "--customers", str(total),
        "--seed", str(SEED), "--callback-url", f"http://127.0.0.1:{app_port}/wecom/callback",
    )  # fmt: skip
    results: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        await wait_http(f"{sim}/sim/ping")
        for i, n in enumerate(counts):
            a = await part_a(deploy, n, handle)
            group = handle.customers[i * customers_per_run : (i + 1) * customers_per_run]
            b = await part_b(deploy, n, group, handle.open_kfid)
            results[n] = (a, b)
        lines = list(storage(conninfo))
    finally:
        for process in list(deploy.started):
            process.terminate()
        for process in deploy.started:
            process.wait(30)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"{load_before:.1f} before and {os.getloadavg()[0]:.1f} after, {time.monotonic() - started:.0f} s"
    )
    print(f"machine: {machine}")
    base_a, base_b = results[counts[0]][0]["per_s"], results[counts[0]][1]["per_s"]
    for n, (a, b) in results.items():
        print(
            f"{n} process(es): A {a['per_s']:.0f} callbacks/s (×{a['per_s'] / base_a:.2f}), serve CPU "
            f"{a['app_cores']:.2f} cores, database CPU {a['db_cores']:.2f} cores ({per(a, 'db_cores')}) | "
            f"B {b['per_s']:.0f} messages/s (×{b['per_s'] / base_b:.2f}), worker CPU {b['app_cores']:.2f} cores "
            f"({per(b, 'app_cores')}), database CPU {b['db_cores']:.2f} cores ({per(b, 'db_cores')})"
        )
        print(f"   serve: idle {a['idle']}; under load {a['load']}")
        print(f"   worker: idle {b['idle']}; under load {b['load']}")
    print("storage per answered message:")
    for line in lines:
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--processes", default="1,2,3", help="process counts to measure, the first is the baseline"
    )
    parser.add_argument(
        "--customers", type=int, default=1000, help="customers who write once, per count (part B)"
    )
    args = parser.parse_args()
    _loop.run(main([int(n) for n in args.processes.split(",")], args.customers))
