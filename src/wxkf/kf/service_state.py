"""service_state read and changed through WeCom, cached briefly in `kf_conversations` (wecom-api §6).

The cache saves a get before every reply in a busy conversation; it is invalidated when the
customer writes (4 → 0), when WeCom reports a session or servicer change, and after our own trans.

A cached state is stamped with the moment it was true (`state_checked_at`): when it was fetched, or
the event's own time, never the moment it was written. The conversation job reads the stamp to
tell whether a customer message came after the state it knows (see `conversation._answer`).

The pause a servicer's message sets (KF_PAUSE_MINUTES) belongs to that servicer's session: when the
session ends (the end event, or our own trans → 4) the pause ends with it (`end_servicer_pause`),
so the customer's next message, which opens a new session, reaches the bot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from wxkf.kf import ledger
from wxkf.kf.policy import state_name
from wxkf.kf.responder import Conversation
from wxkf.wecom.client import WeComClient
from wxkf.wecom.errors import APIError

log = logging.getLogger("wxkf.kf.state")


@dataclass(frozen=True)
class SessionState:
    state: int
    servicer_userid: str | None
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # when it was true


async def store_state(
    conn: AsyncConnection[Any],
    conversation: Conversation,
    state: int | None,
    servicer: str | None,
    as_of: datetime | None = None,
) -> None:
    """Remember a state WeCom told us, true at `as_of` (default now); with `state=None`, forget it.

    A stamp in the future (a WeCom clock ahead of ours) is taken as now.
    """
    await conn.execute(
        """
        INSERT INTO kf_conversations (open_kfid, external_userid, service_state, servicer_userid,
                                      state_checked_at)
        VALUES (%(k)s, %(u)s, %(s)s, %(v)s,
                CASE WHEN %(s)s::int IS NULL THEN NULL
                     ELSE least(coalesce(%(t)s::timestamptz, now()), now()) END)
        ON CONFLICT (open_kfid, external_userid) DO UPDATE
        SET service_state = EXCLUDED.service_state, servicer_userid = EXCLUDED.servicer_userid,
            state_checked_at = EXCLUDED.state_checked_at, updated_at = now()
        """,
        {
            "k": conversation.open_kfid,
            "u": conversation.external_userid,
            "s": state,
            "v": servicer,
            "t": as_of,
        },
    )


# Every servicer message of a session ended at `t` was sent by `t`, so the pause it set runs to
# `t + KF_PAUSE_MINUTES` at most; a console takeover's pause runs far beyond and is left alone.
_END_SERVICER_PAUSE = """
UPDATE kf_conversations SET paused_until = NULL, updated_at = now()
WHERE open_kfid = %(k)s AND external_userid = %(u)s
  AND paused_until <= least(coalesce(%(t)s::timestamptz, now()), now()) + %(p)s::interval
"""


async def end_servicer_pause(
    conn: AsyncConnection[Any], conversation: Conversation, pause: timedelta, ended_at: datetime | None = None
) -> bool:
    """The session ended at `ended_at` (default now): the pause its servicer's messages set is over.

    Returns whether a pause was lifted.
    """
    cur = await conn.execute(
        _END_SERVICER_PAUSE,
        {"k": conversation.open_kfid, "u": conversation.external_userid, "t": ended_at, "p": pause},
    )
    return cur.rowcount > 0


def explain_api_error(error: APIError, conversation: Conversation, doing: str) -> str:
    """One line an operator understands: what we did, the errcode, and the catalog's fix."""
    hint = " ".join(error.hint.split()) if error.hint else ""
    return (
        f"{doing} 失败 / failed: errcode={error.errcode} {error.errmsg.split(',')[0]} "
        f"(open_kfid={conversation.open_kfid} external_userid={conversation.external_userid})"
        + (f" — {hint}" if hint else "")
    )


async def record_api_error(
    pool: AsyncConnectionPool[Any], error: APIError, conversation: Conversation, doing: str
) -> None:
    """Log the one line and count `kf.errcode.<n>` (95018/95016/95014/95013 and friends)."""
    log.warning(explain_api_error(error, conversation, doing), extra={"decision": f"errcode_{error.errcode}"})
    async with pool.connection() as conn:
        await ledger.count(conn, f"kf.errcode.{error.errcode}")


class SessionStates:
    """Read and change a conversation's service_state; what WeCom says is cached in `kf_conversations`."""

    def __init__(
        self, client: WeComClient, pool: AsyncConnectionPool[Any], servicer_pause: timedelta
    ) -> None:
        self._client = client
        self._pool = pool
        self._servicer_pause = servicer_pause  # KF_PAUSE_MINUTES: ends with a session we end

    async def get(self, conversation: Conversation) -> SessionState:
        """Ask WeCom and cache the answer (the conversation job reads the cache itself)."""
        found = await self.fetch(conversation)
        async with self._pool.connection() as conn:
            await store_state(conn, conversation, found.state, found.servicer_userid, found.checked_at)
        return found

    async def fetch(self, conversation: Conversation) -> SessionState:
        """Ask WeCom without caching: the caller stores it with `store_state` in its own transaction."""
        asked_at = datetime.now(UTC)
        state, servicer = await self._client.get_service_state(
            conversation.open_kfid, conversation.external_userid
        )
        return SessionState(state, servicer, asked_at)

    async def trans(
        self, conversation: Conversation, to_state: int, servicer: str | None = None
    ) -> str | None:
        """service_state/trans; the state it reached is cached (API moves raise no event, wecom-api §3)."""
        code = await self._client.trans_service_state(
            conversation.open_kfid, conversation.external_userid, to_state, servicer
        )
        async with self._pool.connection() as conn, conn.transaction():
            await store_state(conn, conversation, to_state, servicer if to_state == 3 else None)
            if to_state == 4:
                await end_servicer_pause(conn, conversation, self._servicer_pause)
        log.info(
            "会话状态已变更 / session state changed → %s (open_kfid=%s external_userid=%s)",
            state_name(to_state),
            conversation.open_kfid,
            conversation.external_userid,
            extra={"decision": "state_changed"},
        )
        return code
