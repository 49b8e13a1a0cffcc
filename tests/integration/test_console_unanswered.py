"""The unanswered list's suggested answer: what a person said to the question, not to a later one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from wxkf.agent.kb.embedders import HashingEmbedder
from wxkf.db.engine import Database
from wxkf.web.console import unanswered

KF = "wkSHOP"
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


async def _customer_wrote(database: Database, customer: str, msgid: str, text: str, at: datetime) -> None:
    async with database.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO kf_inbound (open_kfid, msgid, external_userid, origin, msgtype, send_time, body,"
            " recorded_at, status) VALUES (%s, %s, %s, 3, 'text', %s, %s, %s, 'answered')",
            (KF, msgid, customer, at, json.dumps({"text": {"content": text}}), at),
        )


async def _unanswered(database: Database, customer: str, msgid: str, question: str, at: datetime) -> None:
    await _customer_wrote(database, customer, msgid, question, at)
    async with database.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO console_unanswered (open_kfid, external_userid, msgid, question, kind, asked_at)"
            " VALUES (%s, %s, %s, %s, 'handoff', %s)",
            (KF, customer, msgid, question, at + timedelta(seconds=1)),
        )


async def _staff_replied(database: Database, customer: str, msgid: str, text: str, at: datetime) -> None:
    async with database.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO kf_outbox (open_kfid, external_userid, msgid, kind, msgtype, body, status,"
            " created_at) VALUES (%s, %s, %s, 'staff', 'text', %s, 'sent', %s)",
            (KF, customer, msgid, json.dumps({"content": text}), at),
        )


async def test_a_reply_to_the_customers_next_question_is_not_offered_as_the_answer(
    database: Database,
) -> None:
    # Customer A's question is left; they ask something else; staff answer that one.
    await _unanswered(database, "wmA", "a1", "可以开增值税专用发票吗", T0)
    await _customer_wrote(database, "wmA", "a2", "你们卖蛋白粉吗", T0 + timedelta(minutes=1))
    await _staff_replied(database, "wmA", "s1", "您好，我们不卖蛋白粉", T0 + timedelta(minutes=2))
    await unanswered.group_new(database.pool, HashingEmbedder())
    (group,) = await unanswered.open_groups(database.pool)
    assert not group.suggested_answer

    # Customer B asks the same; staff answer it before B writes again: that is the answer.
    await _unanswered(database, "wmB", "b1", "能开增值税专用发票吗", T0 + timedelta(minutes=3))
    await _staff_replied(database, "wmB", "s2", "可以开专票，请发抬头和税号。", T0 + timedelta(minutes=4))
    await _customer_wrote(database, "wmB", "b2", "好的", T0 + timedelta(minutes=5))
    await unanswered.group_new(database.pool, HashingEmbedder())
    (group,) = await unanswered.open_groups(database.pool)
    assert group.count == 2
    assert group.suggested_answer == "可以开专票，请发抬头和税号。"
    assert group.answered_by == "staff"
