"""The inbound ledger: every sync_msg item exactly once, UNIQUE(open_kfid, msgid) (wecom-api §3).

Rows are written in the caller's transaction together with the sync cursor, so a crash either keeps
both or neither: a page is never lost and never recorded twice. A row starts `pending`; the
conversation job moves it to `answered`, `skipped` (with a `Reason`), `handled` (events, servicer
messages) or `recalled`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row

from wxkf.db.text import db_json
from wxkf.kf.budget import ReplyBudget
from wxkf.kf.policy import Reason
from wxkf.kf.responder import Conversation
from wxkf.wecom.models import KfMessage

ORIGIN_CUSTOMER = 3  # wecom-api §3: 3 微信客户发送的消息
ORIGIN_SYSTEM = 4  # 4 系统推送的事件消息
ORIGIN_SERVICER = 5  # 5 接待人员在企业微信客户端发送的消息


@dataclass
class RecordResult:
    conversations: set[Conversation] = field(default_factory=set)
    recorded: int = 0
    duplicates: int = 0
    history: int = 0


@dataclass(frozen=True)
class InboundRow:
    id: int
    open_kfid: str
    msgid: str
    external_userid: str
    origin: int
    msgtype: str
    event_type: str | None
    servicer_userid: str | None
    send_time: datetime
    body: dict[str, Any]
    age_seconds: float  # since it was recorded, by the database's clock

    @property
    def event(self) -> dict[str, Any]:
        value = self.body.get("event")
        return value if isinstance(value, dict) else {}


def _identity(open_kfid: str, message: KfMessage) -> tuple[str, str]:
    """(open_kfid, external_userid) of an item; for events they live inside `event` (wecom-api §3)."""
    if message.event is not None:
        return (message.event.open_kfid or open_kfid, message.event.external_userid or "")
    return (message.open_kfid or open_kfid, message.external_userid or "")


_INSERT_INBOUND = """
INSERT INTO kf_inbound (open_kfid, msgid, external_userid, origin, msgtype, event_type,
                        servicer_userid, send_time, body, status, reason)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (open_kfid, msgid) DO NOTHING
RETURNING id
"""


async def record_messages(
    conn: AsyncConnection[Any],
    open_kfid: str,
    messages: Iterable[KfMessage],
    *,
    skip_before: datetime | None = None,
    budget: ReplyBudget | None = None,
) -> RecordResult:
    """Insert one sync_msg page; items already recorded are ignored. Returns the conversations touched.

    A page of up to 1000 items costs two round trips (pipeline mode): the inserts, then the
    customers' budget windows; what follows from an item depends only on whether it was new.
    """
    budget = budget or ReplyBudget()
    result = RecordResult()
    items: list[tuple[KfMessage, str, str, datetime, str | None, str]] = []
    params: list[tuple[Any, ...]] = []
    for message in messages:
        account, external_userid = _identity(open_kfid, message)
        send_time = datetime.fromtimestamp(message.send_time, UTC)
        event_type = message.event.event_type if message.event is not None else None
        status, reason = "pending", None
        if skip_before is not None and send_time < skip_before:
            status, reason = "skipped", Reason.HISTORY.value
        elif not external_userid:
            # Events about a servicer, not a customer (servicer_status_change): nothing to answer.
            status = "handled"
        items.append((message, account, external_userid, send_time, reason, status))
        params.append(
            (
                account,
                message.msgid,
                external_userid,
                message.origin,
                message.msgtype,
                event_type,
                message.servicer_userid or (message.event.servicer_userid if message.event else None),
                send_time,
                db_json(message.model_dump(mode="json", by_alias=True, exclude_none=True)),
                status,
                reason,
            )
        )
    if not params:
        return result
    new: list[bool] = []
    async with conn.cursor() as cur:
        await cur.executemany(_INSERT_INBOUND, params, returning=True)
        while True:
            new.append(await cur.fetchone() is not None)  # RETURNING id: a row only when it was new
            if not cur.nextset():
                break
    customers: list[tuple[Conversation, datetime]] = []
    for (message, account, external_userid, send_time, reason, status), recorded in zip(
        items, new, strict=True
    ):
        if not recorded:
            result.duplicates += 1
            continue
        result.recorded += 1
        if reason is not None:
            result.history += 1
        if not external_userid:
            event = message.event
            if event is not None and event.event_type == "servicer_status_change" and event.servicer_userid:
                # wecom-api §3: a servicer stopped or resumed; their sessions' cached state is stale.
                await conn.execute(
                    "UPDATE kf_conversations SET state_checked_at = NULL "
                    "WHERE open_kfid = %s AND servicer_userid = %s",
                    (account, event.servicer_userid),
                )
            continue
        conversation = Conversation(account, external_userid)
        if message.origin == ORIGIN_CUSTOMER:
            # wecom-api §4: the customer wrote → a fresh 48 h / 5 window (and §6: 4 → 0, the cached
            # state is stale); one statement per customer, sent together below.
            customers.append((conversation, send_time))
        if status == "pending":
            result.conversations.add(conversation)
    await budget.record_customer_messages(conn, customers)
    return result


PENDING_ROWS = """
SELECT id, open_kfid, msgid, external_userid, origin, msgtype, event_type, servicer_userid,
       send_time, body,
       extract(epoch FROM clock_timestamp() - recorded_at)::float8 AS age_seconds
FROM kf_inbound
WHERE open_kfid = %s AND external_userid = %s AND status = 'pending'
ORDER BY id
"""


async def pending_rows(conn: AsyncConnection[Any], conversation: Conversation) -> list[InboundRow]:
    """The conversation's unprocessed rows, in the order WeCom returned them."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(PENDING_ROWS, (conversation.open_kfid, conversation.external_userid))
        return [InboundRow(**row) for row in await cur.fetchall()]


async def start_mark(
    conn: AsyncConnection[Any], ids: Sequence[int], status: str, reason: Reason | str | None = None
) -> AsyncCursor[Any]:
    """`mark` without waiting for the count: in pipeline mode `rowcount` is known after the next sync."""
    return await conn.execute(
        "UPDATE kf_inbound SET status = %s, reason = %s, processed_at = now() "
        "WHERE id = ANY(%s) AND status = 'pending'",
        (status, None if reason is None else str(reason), list(ids)),
    )


async def mark(
    conn: AsyncConnection[Any], ids: Iterable[int], status: str, reason: Reason | str | None = None
) -> int:
    """Move pending rows to `status`; returns how many were still pending (another worker may have won)."""
    id_list = list(ids)
    if not id_list:
        return 0
    return (await start_mark(conn, id_list, status, reason)).rowcount


# Conversations with work: a pending customer message or event, or an unsent outbox row. Shared
# with the recovery scan (`wxkf.kf.recovery`), which keeps those that no job will handle.
WORK = """
SELECT open_kfid, external_userid FROM kf_inbound
WHERE status = 'pending' AND external_userid <> '' AND (%(k)s::text IS NULL OR open_kfid = %(k)s)
  AND recorded_at <= clock_timestamp() - make_interval(secs => %(age)s)
UNION
SELECT open_kfid, external_userid FROM kf_outbox
WHERE status = 'pending' AND (%(k)s::text IS NULL OR open_kfid = %(k)s)
  AND created_at <= clock_timestamp() - make_interval(secs => %(age)s)
"""


async def conversations_with_work(conn: AsyncConnection[Any], open_kfid: str) -> set[Conversation]:
    """The account's conversations with pending inbound rows or unsent outbox rows."""
    cur = await conn.execute(WORK, {"k": open_kfid, "age": 0.0})
    return {Conversation(a, b) for a, b in await cur.fetchall()}


async def count(conn: AsyncConnection[Any], name: str, n: int = 1) -> None:
    """Add to a named counter in `kf_counters` (read by the ops metrics export)."""
    await conn.execute(
        "INSERT INTO kf_counters (name, value) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET value = kf_counters.value + EXCLUDED.value",
        (name, n),
    )
