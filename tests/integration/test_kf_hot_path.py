"""The pipeline's batched statements keep the rules of the one-at-a-time ones they replaced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from wxkf.kf.budget import BudgetState, ReplyBudget
from wxkf.kf.responder import Conversation
from wxkf.kf.service_state import store_state

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
ALICE = Conversation("wk1", "alice")


async def _row(conn: AsyncConnection[Any]) -> tuple[Any, ...]:
    cur = await conn.execute(
        "SELECT window_started_at, replies_used, state_checked_at FROM kf_conversations "
        "WHERE open_kfid = %s AND external_userid = %s",
        (ALICE.open_kfid, ALICE.external_userid),
    )
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def test_the_customer_message_upsert_follows_budget_state(database_url: str) -> None:
    budget = ReplyBudget()
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        # A conversation not seen before: a fresh window.
        await budget.record_customer_message(conn, ALICE, T0)
        assert (await _row(conn))[:2] == (T0, 0)
        assert await budget.reserve(conn, ALICE, 3) == 3
        await store_state(conn, ALICE, 1, None)
        assert (await _row(conn))[2] is not None

        # A message older than the window (replayed late) changes no budget, as BudgetState says.
        expected = BudgetState(T0, 3).after_customer_message(T0 - timedelta(minutes=5))
        await budget.record_customer_messages(conn, [(ALICE, T0 - timedelta(minutes=5)), (ALICE, T0)])
        window, used, checked = await _row(conn)
        assert BudgetState(window, used) == expected == BudgetState(T0, 3)
        assert checked is None  # wecom-api §6: the customer wrote, the cached state is stale

        # A newer message opens a fresh window.
        later = T0 + timedelta(minutes=30)
        await budget.record_customer_messages(conn, [(ALICE, later)])
        assert (await _row(conn))[:2] == (later, 0)
        assert await budget.reserve(conn, ALICE, 9) == 5
