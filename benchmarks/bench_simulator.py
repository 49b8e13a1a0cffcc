"""Simulator throughput with 2,000 customers and concurrent traffic, against a bare endpoint.

The simulator runs in its own process (`wxkf simulator --customers 2000`). Workers share 2,000
customers; for each customer: the customer writes (control API), the account is synced
incrementally (`kf/sync_msg` from the shared cursor) and the customer gets a reply (`kf/send_msg`).
Baseline: the same number of requests at the same concurrency to `/sim/ping`, a bare JSON endpoint
on the same server. A ratio near 1 means the HTTP stack, not the simulator's logic, sets the pace —
the simulator is not the bottleneck of benchmarks that drive wxkf against it.

    .venv/bin/python benchmarks/bench_simulator.py
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from typing import Any

import httpx

CUSTOMERS = 2000
CONCURRENCY = 50
ROUNDS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_ready(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if (await client.get("/sim/ping")).status_code == 200:
                return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def run_pool(jobs: list[Any], worker: Any) -> float:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def drain() -> None:
        while not queue.empty():
            await worker(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(drain() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


async def measure(base: str) -> dict[str, Any]:
    # keep-alive shorter than uvicorn's 5 s, so no request rides a connection the server is closing
    limits = httpx.Limits(
        max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY, keepalive_expiry=2
    )
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        await wait_ready(client)
        world = (await client.get("/sim/world")).json()
        kfid = world["accounts"][0]["open_kfid"]
        contacts = {c for m in world["members"] for c in m["external_contacts"]}
        customers = [c["external_userid"] for c in world["customers"] if c["external_userid"] not in contacts]
        assert len(customers) == CUSTOMERS
        token = (
            await client.get(
                "/cgi-bin/gettoken",
                params={"corpid": world["corp_id"], "corpsecret": world["apps"]["kf"]["secret"]},
            )
        ).json()["access_token"]
        cursor = {"value": ""}
        errors = {"count": 0}
        synced = {"items": 0}

        async def conversation(customer: str) -> None:
            await client.post(
                f"/sim/customers/{customer}/messages", json={"open_kfid": kfid, "content": "请问有货吗？"}
            )
            body: dict[str, Any] = {"open_kfid": kfid, "limit": 1000}
            if cursor["value"]:
                body["cursor"] = cursor["value"]
            page = (
                await client.post("/cgi-bin/kf/sync_msg", params={"access_token": token}, json=body)
            ).json()
            if page["errcode"] == 0:
                cursor["value"] = page["next_cursor"]
                synced["items"] += len(page["msg_list"])
            reply = {"open_kfid": kfid, "touser": customer, "msgtype": "text", "text": {"content": "有的"}}
            sent = (
                await client.post("/cgi-bin/kf/send_msg", params={"access_token": token}, json=reply)
            ).json()
            errors["count"] += page["errcode"] != 0 or sent["errcode"] != 0

        async def ping(_: int) -> None:
            await client.get("/sim/ping")

        await run_pool(list(range(300)), ping)  # warm connections and code paths
        # Alternate the two in rounds so that load from other processes hits both alike.
        baseline_s = simulator_s = 0.0
        step = CUSTOMERS // ROUNDS
        for start in range(0, CUSTOMERS, step):
            baseline_s += await run_pool(list(range(step * 3)), ping)
            simulator_s += await run_pool(customers[start : start + step], conversation)
        calls = (await client.get("/sim/calls", params={"api": "kf/send_msg"})).json()
        server_ms = sorted(c["ms"] for c in calls)
    requests = CUSTOMERS * 3
    return {
        "customers": CUSTOMERS,
        "concurrency": CONCURRENCY,
        "requests_each": requests,
        "baseline_ping_req_per_s": round(requests / baseline_s),
        "simulator_mix_req_per_s": round(requests / simulator_s),
        "ratio_to_baseline": round(baseline_s / simulator_s, 3),
        "send_msg_in_server_p50_ms": server_ms[len(server_ms) // 2],
        "send_msg_in_server_p99_ms": server_ms[int(len(server_ms) * 0.99)],
        "synced_items": synced["items"],
        "errors": errors["count"],
    }


def main() -> dict[str, Any]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "wxkf.cli", "simulator", "--port", str(port), "--customers", str(CUSTOMERS)],
        stdout=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        result = asyncio.run(measure(f"http://127.0.0.1:{port}"))
    finally:
        process.terminate()
        process.wait(timeout=10)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return result


if __name__ == "__main__":
    main()
