"""The connection budget: what every wxkf process may hold, against what the server allows.

A wxkf process holds at most

    DATABASE_POOL_SIZE     its one pool, shared by every package (`Database.pool`)
    + 1                    the job worker's LISTEN connection (`wxkf worker`, `wxkf serve --worker`):
                           LISTEN needs a session of its own, so procrastinate keeps it beside the pool
    + 1                    the callback writer's connection (`wxkf serve`): callbacks are written in
                           batches on one connection (a pool checkout per batch cost a sixth of the write)

so N processes need N × (DATABASE_POOL_SIZE + 2) connections, which must fit in the server's
`max_connections` less its reserved slots and whatever else is connected. Every connection carries
its role and process in `application_name` (`wxkf.db.engine.application_name`), which is how the
processes connected now are counted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from psycopg import Connection

from wxkf.config import Settings

BESIDE_THE_POOL = 2  # the worker's LISTEN connection and the callback writer's
WARN_SHARE = 0.8  # a budget above this share of what is available leaves no room for a restart overlap

_APPLICATION_NAME = re.compile(r"^(wxkf[a-z-]*):(.+):(\d+)$")

# PostgreSQL 16 added reserved_connections; on older servers current_setting(…, true) is NULL.
_SERVER = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true)::int, 0)
"""
_CLIENTS = "SELECT application_name FROM pg_stat_activity WHERE backend_type = 'client backend'"


@dataclass(frozen=True)
class ConnectionBudget:
    """The server's limits, what is connected now, and what the planned processes may take."""

    max_connections: int
    reserved: int
    others: int  # connections now that are not a wxkf process's (psql, other apps, this check)
    connected: dict[str, int]  # "<host>:<pid>" of each wxkf process connected now → its connections
    processes: int  # processes planned for (WXKF_PROCESSES, or those connected now)
    per_process: int

    @property
    def needed(self) -> int:
        return self.processes * self.per_process

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved - self.others

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    @property
    def tight(self) -> bool:
        return self.needed > WARN_SHARE * self.available

    def largest_pool(self) -> int:
        """The largest DATABASE_POOL_SIZE that fits the planned processes (at least 0)."""
        return max(0, self.available // max(self.processes, 1) - BESIDE_THE_POOL)


def per_process(settings: Settings) -> int:
    return settings.database_pool_size + BESIDE_THE_POOL


def wxkf_process(application_name: str) -> str | None:
    """The "<host>:<pid>" of a wxkf connection's process; None for anything else."""
    match = _APPLICATION_NAME.match(application_name or "")
    return f"{match.group(2)}:{match.group(3)}" if match else None


def read_budget(conn: Connection[Any], settings: Settings) -> ConnectionBudget:
    """The budget on the server `conn` is connected to (its own connection counts as an other)."""
    row = conn.execute(_SERVER).fetchone()
    assert row is not None
    max_connections, reserved = int(row[0]), int(row[1])
    processes: Counter[str] = Counter()
    others = 0
    for (name,) in conn.execute(_CLIENTS).fetchall():
        process = wxkf_process(str(name or ""))
        if process is None:
            others += 1
        else:
            processes[process] += 1
    planned = settings.wxkf_processes or max(len(processes), 1)
    return ConnectionBudget(
        max_connections=max_connections,
        reserved=reserved,
        others=others,
        connected=dict(processes),
        processes=planned,
        per_process=per_process(settings),
    )
