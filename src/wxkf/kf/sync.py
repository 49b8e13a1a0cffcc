"""Sync one kf account: follow sync_msg pages and commit each page with its cursor (wecom-api §3).

Each page's ledger rows and the cursor after it commit in ONE transaction: a crash before the commit
re-reads the page (the ledger ignores what it already has), a crash after it continues from the next
page. `has_more` is followed even when a page is empty ("不能通过判断msg_list是否空来停止拉取").
On the very first sync (no cursor) WeCom returns up to 3 days of history; messages older than
KF_HISTORY_MAX_AGE_MINUTES are recorded as skipped instead of answered days late.

A stored cursor that WeCom refuses (40058 `invalid param 'cursor'`, or 701105 cursor不合法; which one
kf/sync_msg returns is not documented) would stop the account for good: every sync would send it
again. It is dropped once per run and the account synced from the start, like a first sync: the
ledger ignores what it already has, and only what is new (and recent) is answered.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection

from wxkf.kf import ledger
from wxkf.kf.responder import Conversation
from wxkf.wecom.errors import APIError

if TYPE_CHECKING:
    from wxkf.kf.runtime import Pipeline

log = logging.getLogger("wxkf.kf.sync")

CALLBACK_TOKEN_TTL = timedelta(minutes=10)  # wecom-api §2: the callback Token lives 10 minutes
INVALID_MSG_TOKEN = 95007  # wecom-api §3/§7.1: 不合法的msgtoken (expired or invalid)
REFUSED_CURSOR = frozenset({40058, 701105})  # 不合法的参数; cursor不合法 (wecom-errcodes.tsv)
MAX_PAGES_PER_RUN = 1000  # a run this long yields to other accounts; the sweep defers the next


async def latest_token(conn: AsyncConnection[Any], open_kfid: str) -> str | None:
    """The newest callback Token still inside its 10 minutes, if any."""
    cur = await conn.execute(
        "SELECT token FROM kf_callback_events WHERE open_kfid = %s AND received_at > now() - %s "
        "ORDER BY id DESC LIMIT 1",
        (open_kfid, CALLBACK_TOKEN_TTL),
    )
    row = await cur.fetchone()
    return str(row[0]) if row and row[0] else None


async def sync_account(pipeline: Pipeline, open_kfid: str, token: str | None = None) -> set[Conversation]:
    """Pull everything new for `open_kfid`; return the conversations that have work to do."""
    async with pipeline.pool.connection() as conn:
        token = await latest_token(conn, open_kfid) or token
        cur = await conn.execute("SELECT cursor FROM kf_sync_cursors WHERE open_kfid = %s", (open_kfid,))
        found = await cur.fetchone()
    cursor: str | None = str(found[0]) if found else None
    history_start = datetime.now(UTC) - timedelta(minutes=pipeline.settings.kf_history_max_age_minutes)
    skip_before = history_start if found is None else None
    cursor_reset = False
    touched: set[Conversation] = set()
    recorded = history = 0
    for _ in range(MAX_PAGES_PER_RUN):
        try:
            page = await pipeline.client.sync_msg(open_kfid, cursor=cursor or None, token=token)
        except APIError as exc:
            if exc.errcode == INVALID_MSG_TOKEN and token:
                # The callback Token expired mid-run: continue without it (stricter rate limit, §3).
                log.info(
                    "回调 Token 已过期，改为不带 token 拉取 / callback token expired; syncing without it"
                )
                token = None
                continue
            if exc.errcode in REFUSED_CURSOR and cursor and not cursor_reset:
                log.warning(
                    "企业微信不再接受已保存的同步游标，从头同步一次（已处理的消息不会重复答复）"
                    " / WeCom refused the stored sync cursor (errcode %d); syncing from the start once,"
                    " messages already handled are not answered again",
                    exc.errcode,
                    extra={"decision": "sync_cursor_reset"},
                )
                async with pipeline.pool.connection() as conn:
                    await ledger.count(conn, "kf.sync.cursor_reset")
                cursor, cursor_reset, skip_before = None, True, history_start
                continue
            raise
        async with pipeline.pool.connection() as conn, conn.transaction():
            result = await ledger.record_messages(conn, open_kfid, page.msg_list, skip_before=skip_before)
            # A page came: the account exists, whatever an earlier sync was told (kf_sync_refusals).
            await conn.execute(
                """
                WITH exists AS (DELETE FROM kf_sync_refusals WHERE open_kfid = %(k)s)
                INSERT INTO kf_sync_cursors (open_kfid, cursor) VALUES (%(k)s, %(cursor)s)
                ON CONFLICT (open_kfid) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()
                """,
                {"k": open_kfid, "cursor": page.next_cursor or cursor or ""},
            )
        touched |= result.conversations
        recorded += result.recorded
        history += result.history
        cursor = page.next_cursor or cursor
        if not page.has_more:
            break
    async with pipeline.pool.connection() as conn:
        touched |= await ledger.conversations_with_work(conn, open_kfid)
    if recorded:
        log.info(
            "已同步 %d 条消息/事件（跳过历史 %d 条），%d 个会话待处理 / synced",
            recorded,
            history,
            len(touched),
            extra={"decision": "synced"},
        )
    return touched
