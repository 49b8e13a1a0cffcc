"""The reply budget: WeCom's 5 messages within 48 h of the customer's last message (wecom-api §4).

"仅当微信客户在主动发送消息给客服后的48小时内，企业可发送消息给客户，最多可发送5条消息；若用户继续
发送消息，企业可再次下发消息。" Every outbound send_msg — AI reply, push, tool-initiated — takes its
messages from here, in the same transaction that writes the outbox rows, so two senders can never
spend the same message. The welcome message is not counted: send_msg_on_event has its own quota
(wecom-api §5).

Other areas use it like this (inside their own transaction)::

    async with conn.transaction():
        granted = await ReplyBudget().reserve(conn, conversation, 2)   # 0, 1 or 2
        ...write the outbox rows (`wxkf.kf.outbox.enqueue_texts` does both)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from wxkf.clock import utcnow
from wxkf.kf.responder import Conversation

MESSAGES_PER_WINDOW = 5  # wecom-api §4: 最多可发送5条消息
WINDOW = timedelta(hours=48)  # wecom-api §4: 48小时内


@dataclass(frozen=True)
class BudgetState:
    """The ledger of one conversation: when the customer last wrote and how many we sent since."""

    window_started_at: datetime | None
    used: int

    def remaining(self, now: datetime) -> int:
        if self.window_started_at is None or now >= self.window_started_at + WINDOW:
            return 0
        return max(0, MESSAGES_PER_WINDOW - self.used)

    def after_customer_message(self, send_time: datetime) -> BudgetState:
        """A customer message opens a fresh window; an older one (replayed late) changes nothing."""
        if self.window_started_at is None or send_time > self.window_started_at:
            return BudgetState(send_time, 0)
        return self

    def after_reserving(self, n: int, now: datetime, keep: int = 0) -> tuple[BudgetState, int]:
        """Take up to `n` messages, leaving at least `keep` of the window for others (a push keeps
        the last one for the customer's own question)."""
        granted = min(max(n, 0), max(0, self.remaining(now) - keep))
        return BudgetState(self.window_started_at, self.used + granted), granted


async def _ensure_row(conn: AsyncConnection[Any], conversation: Conversation) -> None:
    await conn.execute(
        "INSERT INTO kf_conversations (open_kfid, external_userid) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (conversation.open_kfid, conversation.external_userid),
    )


async def _locked_state(conn: AsyncConnection[Any], conversation: Conversation) -> BudgetState:
    query = (
        "SELECT window_started_at, replies_used FROM kf_conversations "
        "WHERE open_kfid = %s AND external_userid = %s FOR UPDATE"
    )
    key = (conversation.open_kfid, conversation.external_userid)
    row = await (await conn.execute(query, key)).fetchone()
    if row is None:  # a conversation WeCom has not told us about yet: it has no budget, but a row
        await _ensure_row(conn, conversation)
        row = await (await conn.execute(query, key)).fetchone()
    assert row is not None  # the row was ensured above
    window, used = row
    return BudgetState(window, used)


async def _store(conn: AsyncConnection[Any], conversation: Conversation, state: BudgetState) -> None:
    await conn.execute(
        "UPDATE kf_conversations SET window_started_at = %s, replies_used = %s, updated_at = now() "
        "WHERE open_kfid = %s AND external_userid = %s",
        (state.window_started_at, state.used, conversation.open_kfid, conversation.external_userid),
    )


# One statement per customer message, the SQL form of `BudgetState.after_customer_message` (the
# sync writes it for every recorded customer message, so it is on the hot path): a newer message
# opens a fresh window, an older one (replayed late) changes nothing. It also forgets the cached
# service_state: wecom-api §6, a customer message moves state 4 → 0, so what we cached is stale.
_RECORD_CUSTOMER_MESSAGE = """
INSERT INTO kf_conversations (open_kfid, external_userid, window_started_at, replies_used)
VALUES (%s, %s, %s, 0)
ON CONFLICT (open_kfid, external_userid) DO UPDATE SET
    replies_used = CASE
        WHEN kf_conversations.window_started_at IS NULL
          OR EXCLUDED.window_started_at > kf_conversations.window_started_at THEN 0
        ELSE kf_conversations.replies_used END,
    window_started_at = greatest(kf_conversations.window_started_at, EXCLUDED.window_started_at),
    state_checked_at = NULL,
    updated_at = now()
"""


class ReplyBudget:
    """The budget ledger in `kf_conversations`. Call inside the caller's transaction."""

    async def record_customer_message(
        self, conn: AsyncConnection[Any], conversation: Conversation, send_time: datetime
    ) -> None:
        """The customer wrote at `send_time`: a fresh window (and the cached state forgotten)."""
        await self.record_customer_messages(conn, [(conversation, send_time)])

    async def record_customer_messages(
        self, conn: AsyncConnection[Any], messages: Sequence[tuple[Conversation, datetime]]
    ) -> None:
        """`record_customer_message` for a whole sync page, in one round trip (pipeline mode).

        Recording a message twice changes no budget, so callers need not filter out duplicates.
        """
        if messages:
            async with conn.cursor() as cur:
                await cur.executemany(
                    _RECORD_CUSTOMER_MESSAGE,
                    [(c.open_kfid, c.external_userid, send_time) for c, send_time in messages],
                )

    async def remaining(
        self, conn: AsyncConnection[Any], conversation: Conversation, now: datetime | None = None
    ) -> int:
        cur = await conn.execute(
            "SELECT window_started_at, replies_used FROM kf_conversations "
            "WHERE open_kfid = %s AND external_userid = %s",
            (conversation.open_kfid, conversation.external_userid),
        )
        row = await cur.fetchone()
        if row is None:
            return 0
        window, used = row
        return BudgetState(window, used).remaining(now or utcnow())

    async def lock(self, conn: AsyncConnection[Any], conversation: Conversation) -> BudgetState:
        """The conversation's budget, its row locked until the caller's transaction ends: a caller
        that decides from it (a push) and then reserves cannot be overtaken by another sender."""
        return await _locked_state(conn, conversation)

    async def reserve(
        self,
        conn: AsyncConnection[Any],
        conversation: Conversation,
        n: int,
        now: datetime | None = None,
        *,
        keep: int = 0,
    ) -> int:
        """Take up to `n` messages from the budget, leaving `keep`; return how many were granted (0…n)."""
        state = await _locked_state(conn, conversation)
        new, granted = state.after_reserving(n, now or utcnow(), keep)
        if granted:
            await _store(conn, conversation, new)
        return granted
