"""The receive ledger: what each customer received, and the receive cap enforced before WeCom.

One row per customer per task (`contact_receipts`). A send first *reserves* rows for the customers
still under the cap, under one advisory lock so two concurrent sends cannot both pass; then the
task is created at WeCom and the rows become `pending` (or `rejected` for WeCom's fail_list), or are
released if WeCom refused. Status reads turn them into `sent` (with WeCom's send_time),
`not_friend` (status 2) or `capped` (status 3). Rows count against the cap while reserved, pending
or sent, at their send time or else their creation time (wecom-api §9).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from wxkf.contact.cap import ReceiveCap
from wxkf.contact.errors import CappedCustomer
from wxkf.db.engine import Pool

_LOCK_KEY = 0x77786B63  # "wxkc": one reservation at a time, so the count and the insert agree
_STALE_RESERVATION = timedelta(minutes=10)  # a crash between reserve and commit frees the slot later

# wecom-api §9 get_groupmsg_send_result status → ledger state
_STATE_BY_STATUS = {0: "pending", 1: "sent", 2: "not_friend", 3: "capped"}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    allowed: list[str]
    capped: list[CappedCustomer]


@dataclass(frozen=True)
class SendResult:
    """One row of get_groupmsg_send_result (wecom-api §9)."""

    external_userid: str
    status: int
    send_time: datetime | None


# Rows that count against the cap in [start, end): reserved (unless stale), pending or sent.
_COUNTS = """
SELECT external_userid, count(*) FROM contact_receipts
WHERE external_userid = ANY(%(ids)s::text[])
  AND state IN ('reserved', 'pending', 'sent')
  AND NOT (state = 'reserved' AND created_at < %(stale)s)
  AND coalesce(received_at, created_at) >= %(start)s
  AND coalesce(received_at, created_at) < %(end)s
GROUP BY external_userid
"""
_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_RESERVE = """
INSERT INTO contact_receipts (external_userid, sender, reservation, state, created_at)
SELECT u, %(sender)s, %(reservation)s, 'reserved', %(now)s FROM unnest(%(ids)s::text[]) AS u
"""
_RELEASE = "DELETE FROM contact_receipts WHERE reservation = %s AND state = 'reserved'"
_COMMIT = """
UPDATE contact_receipts
SET msgid = %(msgid)s,
    state = CASE WHEN external_userid = ANY(%(failed)s::text[]) THEN 'rejected' ELSE 'pending' END
WHERE reservation = %(reservation)s
"""
# A cancelled task's unsent rows stay cancelled; WeCom's fail_list rows stay rejected.
_RECORD_RESULTS = """
UPDATE contact_receipts AS r
SET state = v.state, received_at = v.send_time
FROM unnest(%(ids)s::text[], %(states)s::text[], %(times)s::timestamptz[])
     AS v(external_userid, state, send_time)
WHERE r.msgid = %(msgid)s AND r.external_userid = v.external_userid
  AND r.state NOT IN ('rejected')
  AND NOT (r.state = 'cancelled' AND v.state = 'pending')
"""
_CANCEL = (
    "UPDATE contact_receipts SET state = 'cancelled' WHERE msgid = %s AND state IN ('reserved', 'pending')"
)
_HISTORY = """
SELECT msgid, state, coalesce(received_at, created_at) AS at FROM contact_receipts
WHERE external_userid = %s ORDER BY at DESC LIMIT %s
"""


class ReceiveLedger:
    def __init__(self, pool: Pool, cap: ReceiveCap, clock: Callable[[], datetime] = utc_now) -> None:
        self.pool = pool
        self.cap = cap
        self.clock = clock

    async def _counts(self, conn: AsyncConnection[Any], external_userids: Sequence[str]) -> dict[str, int]:
        now = self.clock()
        start, end = self.cap.window(now)
        cur = await conn.execute(
            _COUNTS,
            {"ids": list(external_userids), "stale": now - _STALE_RESERVATION, "start": start, "end": end},
        )
        return {r[0]: int(r[1]) for r in await cur.fetchall()}

    async def received_in_period(self, external_userid: str) -> int:
        async with self.pool.connection() as conn:
            return (await self._counts(conn, [external_userid])).get(external_userid, 0)

    async def reserve(self, sender: str, external_userids: Sequence[str]) -> Reservation:
        """Split customers into those under the cap (reserved now) and those at it."""
        now = self.clock()
        limit = self.cap.limit(now)
        _, next_at = self.cap.window(now)
        reservation = uuid.uuid4()
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_LOCK, (_LOCK_KEY,))
            counts = await self._counts(conn, external_userids)
            allowed = [u for u in external_userids if counts.get(u, 0) < limit]
            capped = [
                CappedCustomer(u, counts[u], next_at, self.cap.timezone)
                for u in external_userids
                if counts.get(u, 0) >= limit
            ]
            if allowed:
                await conn.execute(
                    _RESERVE, {"sender": sender, "reservation": reservation, "now": now, "ids": allowed}
                )
        return Reservation(reservation, allowed, capped)

    async def release(self, reservation: Reservation) -> None:
        """WeCom did not create the task: the reserved slots are free again."""
        async with self.pool.connection() as conn:
            await conn.execute(_RELEASE, (reservation.id,))

    async def commit(self, reservation: Reservation, msgid: str, fail_list: Sequence[str]) -> None:
        """The task exists: reserved rows become pending, WeCom's fail_list rows rejected."""
        async with self.pool.connection() as conn:
            await conn.execute(
                _COMMIT, {"msgid": msgid, "failed": list(fail_list), "reservation": reservation.id}
            )

    async def record_results(self, msgid: str, results: Sequence[SendResult]) -> None:
        """Apply get_groupmsg_send_result rows; a cancelled task's unsent rows stay cancelled."""
        if not results:
            return
        async with self.pool.connection() as conn:
            await conn.execute(
                _RECORD_RESULTS,
                {
                    "msgid": msgid,
                    "ids": [r.external_userid for r in results],
                    "states": [_STATE_BY_STATUS.get(r.status, "pending") for r in results],
                    "times": [r.send_time if r.status == 1 else None for r in results],
                },
            )

    async def cancel(self, msgid: str) -> int:
        """The task was cancelled: its unsent rows stop counting. Returns how many were freed."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CANCEL, (msgid,))
        return cur.rowcount

    async def history(self, external_userid: str, limit: int = 20) -> list[tuple[str | None, str, datetime]]:
        """What this customer received, newest first: (msgid, state, time)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_HISTORY, (external_userid, limit))
            return [(r[0], r[1], r[2]) for r in await cur.fetchall()]
