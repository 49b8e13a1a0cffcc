"""Doctor's connection budget against a real PostgreSQL: processes × (pool + 2) vs max_connections."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from wxkf.db.budget import BESIDE_THE_POOL, read_budget, wxkf_process
from wxkf.ops.doctor import DoctorContext, check_connections

# Two other wxkf processes, as their connections name themselves (`application_name`).
PROCESSES = {
    "wxkf:replica-a:101": 2,
    "wxkf-listen:replica-a:101": 1,
    "wxkf-callbacks:replica-a:101": 1,
    "wxkf:replica-b:7": 3,
}


@pytest.fixture
def other_processes(database_url: str) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for name, n in PROCESSES.items():
            for _ in range(n):
                stack.enter_context(psycopg.connect(database_url, application_name=name))
        yield


def test_connections_are_counted_per_process_from_their_names() -> None:
    assert wxkf_process("wxkf-callbacks:replica-a:101") == "replica-a:101"
    assert wxkf_process("wxkf:host:with:colons:9") == "host:with:colons:9"
    assert wxkf_process("psql") is None
    assert wxkf_process("wxkf") is None


async def doctor_row(settings: Any) -> Any:
    async with httpx.AsyncClient() as http:
        ctx = DoctorContext(settings=settings, http=http, conninfo=settings.database_url.get_secret_value())
        [row] = await check_connections(ctx)
    return row


async def test_the_budget_counts_the_processes_connected_now(
    settings_factory: Any, other_processes: None, database_url: str
) -> None:
    settings = settings_factory(database_pool_size=10)
    with psycopg.connect(database_url) as conn:
        budget = read_budget(conn, settings)
    assert budget.connected == {"replica-a:101": 4, "replica-b:7": 3}
    assert budget.processes == 2
    assert budget.needed == 2 * (10 + BESIDE_THE_POOL)
    row = await doctor_row(settings)
    assert row.status == "ok"
    assert "2 个进程" in row.detail
    assert f"= {budget.needed}" in row.detail


async def test_a_plan_that_does_not_fit_fails_with_the_pool_size_that_would(
    settings_factory: Any, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        server = read_budget(conn, settings_factory())
    settings = settings_factory(wxkf_processes=10, database_pool_size=server.available // 10)
    row = await doctor_row(settings)
    assert row.status == "fail"
    largest = server.available // 10 - BESIDE_THE_POOL
    assert f"DATABASE_POOL_SIZE 降到 {largest}" in row.fix
    assert "max_connections" in row.fix
    assert "PgBouncer" in row.fix
    fits = await doctor_row(settings_factory(wxkf_processes=10, database_pool_size=largest))
    assert fits.status == "warn"  # all of it taken: no room for a rolling restart's overlap
    roomy = await doctor_row(settings_factory(wxkf_processes=2, database_pool_size=largest))
    assert roomy.status == "ok"
