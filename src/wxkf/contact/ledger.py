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

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from wxkf.contact.cap import ReceiveCap
from wxkf.contact.errors import CappedCustomer
from wxkf.db.engine import Database

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


class ReceiveLedger:
    def __init__(self, database: Database, cap: ReceiveCap, clock: Callable[[], datetime] = utc_now) -> None:
        self.database = database
        self.cap = cap
        self.clock = clock

    async def _counts(self, conn: AsyncConnection, external_userids: Sequence[str]) -> dict[str, int]:
        now = self.clock()
        start, end = self.cap.window(now)
        rows = await conn.execute(
            text(
                """
                SELECT external_userid, count(*) FROM contact_receipts
                WHERE external_userid = ANY(:ids)
                  AND state IN ('reserved', 'pending', 'sent')
                  AND NOT (state = 'reserved' AND created_at < :stale)
                  AND coalesce(received_at, created_at) >= :start
                  AND coalesce(received_at, created_at) < :end
                GROUP BY external_userid
                """
            ),
            {"ids": list(external_userids), "stale": now - _STALE_RESERVATION, "start": start, "end": end},
        )
        return {r[0]: int(r[1]) for r in rows}

    async def received_in_period(self, external_userid: str) -> int:
        async with self.database.engine.connect() as conn:
            return (await self._counts(conn, [external_userid])).get(external_userid, 0)

    async def reserve(self, sender: str, external_userids: Sequence[str]) -> Reservation:
        """Split customers into those under the cap (reserved now) and those at it."""
        now = self.clock()
        limit = self.cap.limit(now)
        _, next_at = self.cap.window(now)
        reservation = uuid.uuid4()
        async with self.database.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            counts = await self._counts(conn, external_userids)
            allowed = [u for u in external_userids if counts.get(u, 0) < limit]
            capped = [
                CappedCustomer(u, counts[u], next_at) for u in external_userids if counts.get(u, 0) >= limit
            ]
            if allowed:
                await conn.execute(
                    text(
                        """
                        INSERT INTO contact_receipts (external_userid, sender, reservation, state, created_at)
                        SELECT u, :sender, :r, 'reserved', :now FROM unnest(CAST(:ids AS text[])) AS u
                        """
                    ),
                    {"sender": sender, "r": reservation, "now": now, "ids": allowed},
                )
        return Reservation(reservation, allowed, capped)

    async def release(self, reservation: Reservation) -> None:
        """WeCom did not create the task: the reserved slots are free again."""
        async with self.database.engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM contact_receipts WHERE reservation = :r AND state = 'reserved'"),
                {"r": reservation.id},
            )

    async def commit(self, reservation: Reservation, msgid: str, fail_list: Sequence[str]) -> None:
        """The task exists: reserved rows become pending, WeCom's fail_list rows rejected."""
        async with self.database.engine.begin() as conn:
            await conn.execute(
                text(
                    """
                    UPDATE contact_receipts
                    SET msgid = :msgid,
                        state = CASE WHEN external_userid = ANY(:failed) THEN 'rejected' ELSE 'pending' END
                    WHERE reservation = :r
                    """
                ),
                {"msgid": msgid, "failed": list(fail_list), "r": reservation.id},
            )

    async def record_results(self, msgid: str, results: Sequence[SendResult]) -> None:
        """Apply get_groupmsg_send_result rows; a cancelled task's unsent rows stay cancelled."""
        if not results:
            return
        async with self.database.engine.begin() as conn:
            await conn.execute(
                text(
                    """
                    UPDATE contact_receipts AS r
                    SET state = v.state, received_at = v.send_time
                    FROM unnest(CAST(:ids AS text[]), CAST(:states AS text[]),
                                CAST(:times AS timestamptz[])) AS v(external_userid, state, send_time)
                    WHERE r.msgid = :msgid AND r.external_userid = v.external_userid
                      AND r.state NOT IN ('rejected')
                      AND NOT (r.state = 'cancelled' AND v.state = 'pending')
                    """
                ),
                {
                    "msgid": msgid,
                    "ids": [r.external_userid for r in results],
                    "states": [_STATE_BY_STATUS.get(r.status, "pending") for r in results],
                    "times": [r.send_time if r.status == 1 else None for r in results],
                },
            )

    async def cancel(self, msgid: str) -> int:
        """The task was cancelled: its unsent rows stop counting. Returns how many were freed."""
        async with self.database.engine.begin() as conn:
            result = await conn.execute(
                text(
                    "UPDATE contact_receipts SET state = 'cancelled' "
                    "WHERE msgid = :msgid AND state IN ('reserved', 'pending')"
                ),
                {"msgid": msgid},
            )
        return int(result.rowcount)

    async def history(self, external_userid: str, limit: int = 20) -> list[tuple[str | None, str, datetime]]:
        """What this customer received, newest first: (msgid, state, time)."""
        async with self.database.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    """
                    SELECT msgid, state, coalesce(received_at, created_at) AS at FROM contact_receipts
                    WHERE external_userid = :u ORDER BY at DESC LIMIT :n
                    """
                ),
                {"u": external_userid, "n": limit},
            )
            return [(r[0], r[1], r[2]) for r in rows]
