"""The receive-cap check for a full broadcast (10,000 customers), against a baseline in the same run.

A private PostgreSQL (pgserver) with the migrated schema and a ledger history of `--history` rows
(30 days of earlier tasks over 50,000 customers). Measured: `ReceiveLedger.reserve` for 10,000
customers — the advisory lock, the per-customer count in the current period and the insert of the
reservations — then `release`. Baseline: the same 10,000-row insert into `contact_receipts` alone,
then the same delete. The ratio is what the cap check costs on top of recording the send at all.

    .venv/bin/python benchmarks/bench_contact_ledger.py [--rounds 5] [--history 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from wxkf.config import Settings
from wxkf.contact.cap import ReceiveCap
from wxkf.contact.ledger import ReceiveLedger
from wxkf.db.engine import Database, ensure_pgvector
from wxkf.db.migrate import upgrade

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
RECIPIENTS = 10_000  # wecom-api §9: the most one task may name
# 30 days of earlier sends over 50,000 customers.
HISTORY = """
INSERT INTO contact_receipts (external_userid, sender, reservation, msgid, state, created_at, received_at)
SELECT 'wm' || (g % 50000), 'm', gen_random_uuid(), 'old' || (g / 1000), 'sent',
       now() - (g % 30) * interval '1 day' - interval '1 day',
       now() - (g % 30) * interval '1 day' - interval '1 day'
FROM generate_series(1, %s) AS g
"""
INSERT_ONLY = """
INSERT INTO contact_receipts (external_userid, sender, reservation, state)
SELECT u, 'm', %s, 'reserved' FROM unnest(%s::text[]) AS u
"""


async def run(rounds: int, history: int) -> None:
    from pgserver.postgres_server import get_server

    server = get_server(Path(tempfile.mkdtemp(prefix="wxkf-bench-")), cleanup_mode="delete")
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE bench")
    uri: str = server.get_uri("bench")
    ensure_pgvector(uri)
    upgrade(uri)
    database = await Database.open(Settings(_env_file=None, database_url=uri), migrate=False)
    try:
        async with database.pool.connection() as conn:
            await conn.execute(HISTORY, (history,))
            await conn.execute("ANALYZE contact_receipts")
        ledger = ReceiveLedger(database.pool, ReceiveCap("day", 1))
        ids = [f"wm{i}" for i in range(RECIPIENTS)]

        async def baseline() -> float:
            reservation = uuid.uuid4()
            started = time.perf_counter()
            async with database.pool.connection() as conn:
                await conn.execute(INSERT_ONLY, (reservation, ids))
            elapsed = time.perf_counter() - started
            async with database.pool.connection() as conn:
                await conn.execute("DELETE FROM contact_receipts WHERE reservation = %s", (reservation,))
            return elapsed

        async def measured() -> float:
            started = time.perf_counter()
            reservation = await ledger.reserve("m", ids)
            elapsed = time.perf_counter() - started
            assert len(reservation.allowed) == RECIPIENTS
            await ledger.release(reservation)
            return elapsed

        await baseline()
        await measured()  # warm both paths
        base, cap = [], []
        for _ in range(rounds):  # alternate so outside load hits both alike
            base.append(await baseline())
            cap.append(await measured())
    finally:
        await database.close()
        server.cleanup()
    b, c = statistics.median(base), statistics.median(cap)
    load = os.getloadavg()[0]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, load {load:.1f}"
    )
    print(f"history rows: {history}, recipients: {RECIPIENTS}, rounds: {rounds}")
    print(
        f"baseline insert: {b * 1000:.0f} ms   reserve (count + insert): {c * 1000:.0f} ms   ratio {c / b:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--history", type=int, default=200_000)
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.history))


if __name__ == "__main__":
    main()
