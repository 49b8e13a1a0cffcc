"""The receive ledger against real PostgreSQL: the cap holds across tasks, days and cancellations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from wxkf.contact.cap import ReceiveCap
from wxkf.contact.ledger import ReceiveLedger, SendResult
from wxkf.db.engine import Database


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 11, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai

    def __call__(self) -> datetime:
        return self.now


async def test_second_message_on_the_same_day_is_capped_until_midnight(database: Database) -> None:
    clock = Clock()
    ledger = ReceiveLedger(database.pool, ReceiveCap("day", 1), clock)
    first = await ledger.reserve("zhangsan", ["wmA", "wmB"])
    assert first.allowed == ["wmA", "wmB"]
    await ledger.commit(first, "msg1", fail_list=["wmB"])  # WeCom could not send to wmB

    second = await ledger.reserve("lisi", ["wmA", "wmB"])  # another member: the cap is corp-wide
    assert second.allowed == ["wmB"]
    [capped] = second.capped
    assert capped.external_userid == "wmA"
    assert capped.next_at.isoformat() == "2026-03-12T00:00:00+08:00"
    assert "wmA" in capped.describe()

    clock.now += timedelta(hours=14)  # 00:00 next day in Shanghai
    assert (await ledger.reserve("zhangsan", ["wmA"])).allowed == ["wmA"]


async def test_released_and_cancelled_slots_are_free_again(database: Database) -> None:
    ledger = ReceiveLedger(database.pool, ReceiveCap("day", 1), Clock())
    failed = await ledger.reserve("zhangsan", ["wmA"])
    await ledger.release(failed)  # WeCom refused the task
    ok = await ledger.reserve("zhangsan", ["wmA"])
    assert ok.allowed == ["wmA"]
    await ledger.commit(ok, "msg2", fail_list=[])
    assert await ledger.received_in_period("wmA") == 1
    assert await ledger.cancel("msg2") == 1
    assert await ledger.received_in_period("wmA") == 0


async def test_send_results_move_the_count_to_the_send_day(database: Database) -> None:
    clock = Clock()
    ledger = ReceiveLedger(database.pool, ReceiveCap("day", 1), clock)
    r = await ledger.reserve("zhangsan", ["wmA", "wmB", "wmC"])
    await ledger.commit(r, "msg3", fail_list=[])
    sent_at = clock.now + timedelta(days=1)
    await ledger.record_results(
        "msg3",
        [SendResult("wmA", 1, sent_at), SendResult("wmB", 2, None), SendResult("wmC", 3, None)],
    )
    # sent tomorrow: today is free for wmA; not-a-friend and capped-by-WeCom rows never count
    assert (await ledger.reserve("x", ["wmA", "wmB", "wmC"])).capped == []
    clock.now = sent_at
    assert [c.external_userid for c in (await ledger.reserve("x", ["wmA"])).capped] == ["wmA"]
    states = {state for _, state, _ in await ledger.history("wmB")}
    assert "not_friend" in states


async def test_concurrent_sends_cannot_both_pass_the_cap(database: Database) -> None:
    ledger = ReceiveLedger(database.pool, ReceiveCap("day", 1), Clock())
    results = await asyncio.gather(*(ledger.reserve(f"m{i}", ["wmA"]) for i in range(6)))
    assert sum(len(r.allowed) for r in results) == 1
