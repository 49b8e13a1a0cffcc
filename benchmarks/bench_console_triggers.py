"""What the console's change triggers cost the pipeline: recording one sync page of 1,000 customer messages.

The console learns of changes from triggers on `kf_inbound`, `kf_outbox` and `kf_conversations`
(migration `console_0001_console`), which NOTIFY only while a console watches (`console_watch`).
Recording a sync page is the pipeline's busiest write: 1,000 inbound rows and 1,000 conversation
upserts in one transaction (`wxkf.kf.ledger.record_messages`): 1,000 calls of the trigger function
(a customer message's own insert is left to its conversation's upsert).

Three variants in alternating rounds on one database, each page new messages from 1,000 customers:
  baseline  the console's triggers disabled — the pipeline as it is without the console
  idle      triggers on, no console open: each call reads `console_watch` and sends nothing
  watched   a console open: each call also NOTIFYs (deduplicated per conversation and transaction)
The figure is each variant's median time per page over the baseline's.

    .venv/bin/python benchmarks/bench_console_triggers.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from wxkf.db.engine import ensure_pgvector, start_embedded
from wxkf.db.migrate import upgrade
from wxkf.kf import ledger
from wxkf.wecom.models import KfMessage

PAGE = 1000
ACCOUNT = "wkBENCH"
TRIGGERS = {"kf_inbound_console_insert": "kf_inbound", "kf_conversations_console_notify": "kf_conversations"}


def page(round_no: int, variant: str) -> list[KfMessage]:
    now = int(time.time())
    return [
        KfMessage(
            msgid=f"{variant}-{round_no}-{n}",
            open_kfid=ACCOUNT,
            external_userid=f"wm{variant}{n:04d}",
            send_time=now,
            origin=ledger.ORIGIN_CUSTOMER,
            msgtype="text",
            body={"content": f"第 {n} 位客户的问题：运费怎么算？"},
        )
        for n in range(PAGE)
    ]


async def set_variant(conn: psycopg.AsyncConnection[object], variant: str) -> None:
    action = "DISABLE" if variant == "baseline" else "ENABLE"
    for trigger, table in TRIGGERS.items():
        await conn.execute(f"ALTER TABLE {table} {action} TRIGGER {trigger}")
    until = "now() + interval '1 hour'" if variant == "watched" else "NULL"
    await conn.execute(f"UPDATE console_watch SET until = {until}")


async def drain(conninfo: str, stop: asyncio.Event) -> int:
    """A console's LISTEN connection, reading what the watched rounds send."""
    received = 0
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("LISTEN wxkf_console")
        while not stop.is_set():
            async for _ in conn.notifies(timeout=0.2):
                received += 1
    return received


async def run(conninfo: str, rounds: int) -> None:
    stop = asyncio.Event()
    listener = asyncio.create_task(drain(conninfo, stop))
    await asyncio.sleep(0.5)
    timings: dict[str, list[float]] = {"baseline": [], "idle": [], "watched": []}
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for round_no in range(rounds):
            for variant in timings:
                await set_variant(conn, variant)
                messages = page(round_no, variant)
                started = time.perf_counter()
                async with conn.transaction():
                    result = await ledger.record_messages(conn, ACCOUNT, messages)
                timings[variant].append(time.perf_counter() - started)
                assert result.recorded == PAGE
        await set_variant(conn, "idle")
    stop.set()
    notified = await listener
    base = statistics.median(timings["baseline"])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"load average at the end: {os.getloadavg()[0]:.1f}; {rounds} rounds of {PAGE} messages per variant"
    )
    print("| variant | median ms per page | ratio to baseline |")
    print("|---|---|---|")
    for variant, values in timings.items():
        median = statistics.median(values)
        print(f"| {variant} | {median * 1000:.0f} | {median / base:.2f} |")
    print(f"notifications received while watched: {notified}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wxkf-bench-") as tmp:
        conninfo = start_embedded(Path(tmp), "bench_console")
        ensure_pgvector(conninfo)
        upgrade(conninfo)
        asyncio.run(run(conninfo, args.rounds))


if __name__ == "__main__":
    main()
