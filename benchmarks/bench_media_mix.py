"""End-to-end throughput with 20% media messages, against text only, in the same run.

Processes as in `bench_pipeline.py` part B: a private PostgreSQL, the simulator, the wxkf server
(callback route) and one pipeline worker with the instant responder, each its own process. A round:
CUSTOMERS customers write one message each while no worker runs; a worker starts and answers them
all; messages/s from the round's first to its last send_msg. Text-only rounds and mixed rounds
(every fifth message an image of IMAGE_BYTES, downloaded with media/get into the PostgreSQL media
store before it is answered) alternate, ROUNDS of each; the figure is the median of each pair's
ratio (mixed / text of the neighbouring round), so a slower minute on a shared machine weighs on
both sides.

    .venv/bin/python benchmarks/bench_media_mix.py [--customers 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import SEED, control_pool, free_port, query, wait_http, wait_until
from wxkf.db.engine import ensure_pgvector, start_embedded
from wxkf.db.migrate import upgrade
from wxkf.simulator.seed import seed_world
from wxkf.simulator.testing import handle_for

IMAGE_BYTES = 150_000  # a phone photo WeChat has compressed (images over 2 MB never arrive, §3)
MEDIA_SHARE = 5  # every fifth message: 20%


async def upload_images(sim: str, n: int) -> list[str]:
    """`n` distinct images (the store keeps each content once), as customers' media_ids."""
    async with httpx.AsyncClient(base_url=sim, timeout=60) as client:
        ids = []
        for _ in range(n):
            data = b"\x89PNG\r\n\x1a\n" + os.urandom(IMAGE_BYTES)
            body = {
                "type": "image",
                "filename": "photo.png",
                "content_type": "image/png",
                "data_base64": base64.b64encode(data).decode(),
            }
            response = await client.post("/sim/media", json=body)
            ids.append(response.json()["media_id"])
        return ids


async def one_round(
    sim: str, conninfo: str, customers: list[str], open_kfid: str, media_ids: list[str], start_worker: Any
) -> float:
    calls = []
    images = iter(media_ids)
    for i, customer in enumerate(customers):
        if media_ids and i % MEDIA_SHARE == 0:
            body = {"open_kfid": open_kfid, "msgtype": "image", "body": {"media_id": next(images)}}
        else:
            body = {"open_kfid": open_kfid, "msgtype": "text", "body": {"content": "价格"}}
        calls.append((f"/sim/customers/{customer}/messages", body))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        [(before,)] = conn.execute("SELECT coalesce(max(id), 0) FROM kf_outbox").fetchall()
    await control_pool(sim, calls)
    async with httpx.AsyncClient(base_url=sim, timeout=90) as client:
        await client.post("/sim/callbacks/wait", json={"timeout": 60})
    worker = start_worker()
    try:
        n = len(customers)

        def sent() -> int:
            sql = "SELECT count(*) FROM kf_outbox WHERE status = 'sent' AND id > %s"
            return int(query(conninfo, sql, before)[0][0])

        await wait_until(lambda: sent() >= n, 600)
    finally:
        worker.terminate()
        worker.wait(30)
    [(span,)] = query(
        conninfo,
        "SELECT extract(epoch FROM max(sent_at) - min(sent_at)) FROM kf_outbox WHERE id > %s",
        before,
    )
    return (n - 1) / float(span)


async def main(customers_per_round: int, rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wxkf-bench-media-"))
    conninfo = start_embedded(tmp)
    ensure_pgvector(conninfo)
    upgrade(conninfo)
    total = customers_per_round * rounds * 2
    world = seed_world(seed=SEED, customers=total)
    sim_port, app_port = free_port(), free_port()
    sim, base = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{app_port}"
    handle = handle_for(sim, world)
    handle.control.close()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("WECOM_", "KF_", "WXKF_", "LLM_", "MEDIA_"))
        },
        **{k.upper(): str(v) for k, v in handle.settings_overrides().items()},
        "DATABASE_URL": conninfo,
        "WXKF_DATA_DIR": str(tmp / "var"),
        "LOG_LEVEL": "WARNING",
        "KF_DEBOUNCE_SECONDS": "0",
        "KF_POLL_INTERVAL_SECONDS": "0.1",
        "KF_CLOSING_HINT": "",
        "MEDIA_STORE": "postgres",
    }
    pipeline_bench = str(Path(__file__).resolve().parent / "bench_pipeline.py")
    quiet = subprocess.DEVNULL
    processes = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "wxkf.cli", "simulator"),
                *("--port", str(sim_port), "--customers", str(total), "--seed", str(SEED)),
                *("--callback-url", f"{base}/wecom/callback"),
            ],
            env=env,
            stdout=quiet,
            stderr=quiet,
        ),
        subprocess.Popen(
            [sys.executable, pipeline_bench, "--server", str(app_port)], env=env, stdout=quiet, stderr=quiet
        ),
    ]

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, pipeline_bench, "--worker"], env=env, stdout=quiet, stderr=quiet
        )

    text_rates: list[float] = []
    mixed_rates: list[float] = []
    try:
        await wait_http(f"{sim}/sim/ping")
        await wait_http(f"{base}/health")
        people = iter(handle.customers)
        for _ in range(rounds):
            group = [next(people) for _ in range(customers_per_round)]
            text_rates.append(await one_round(sim, conninfo, group, handle.open_kfid, [], start_worker))
            group = [next(people) for _ in range(customers_per_round)]
            media_ids = await upload_images(sim, len(range(0, customers_per_round, MEDIA_SHARE)))
            mixed_rates.append(
                await one_round(sim, conninfo, group, handle.open_kfid, media_ids, start_worker)
            )
        [(stored, mib)] = query(
            conninfo,
            "SELECT count(*), coalesce(sum(size), 0) / 1048576.0 FROM media_inbound WHERE status = 'stored'",
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    ratios = [m / t for t, m in zip(text_rates, mixed_rates, strict=True)]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
    print(f"machine: {machine}")
    print(
        f"rounds of {customers_per_round} messages; text only msg/s: {', '.join(f'{r:.0f}' for r in text_rates)}"
    )
    print(f"20% images ({IMAGE_BYTES // 1000} KB each) msg/s: {', '.join(f'{r:.0f}' for r in mixed_rates)}")
    print(f"stored {stored} images, {float(mib):.1f} MiB in the PostgreSQL media store")
    print(
        f"mixed / text-only throughput: median {statistics.median(ratios):.2f} "
        f"(per pair: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=300, help="messages per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind")
    args = parser.parse_args()
    asyncio.run(main(args.customers, args.rounds))
