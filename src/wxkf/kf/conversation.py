"""One conversation's job: drain its pending messages in order and answer within WeCom's rules.

    outbox left over?  → send it first (order, and recovery after a crash)
    wait for quiet     → a burst within KF_DEBOUNCE_SECONDS is answered together
    events             → welcome / msg_send_fail / state changes / recalls
    servicer wrote     → the bot pauses for KF_PAUSE_MINUTES, or until that session ends
    customer messages  → pause? state policy? budget? → responder → split → outbox → send

Every decision a person cares about is one log line (Chinese first) with the conversation ids;
message bodies only reach the log as `extra={"content": …}`, which is hidden unless LOG_CONTENT=true.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from wxkf.db.engine import connection_lost
from wxkf.kf import handoff, ledger, outbox
from wxkf.kf.budget import BudgetState
from wxkf.kf.inbound import to_inbound_message
from wxkf.kf.ledger import ORIGIN_CUSTOMER, ORIGIN_SERVICER, InboundRow
from wxkf.kf.media_jobs import prepare_batch
from wxkf.kf.outbound import send_row
from wxkf.kf.policy import Action, Reason, decide, state_name
from wxkf.kf.responder import Conversation, MediaContent, Reply, ReplyRequest
from wxkf.kf.service_state import SessionState, end_servicer_pause, record_api_error, store_state
from wxkf.kf.split import add_closing_hint, split_text
from wxkf.media.errors import MediaNotFound, MediaStoreError
from wxkf.ops.logging import log_context
from wxkf.wecom.errors import APIError, SessionStateError, retry_later

if TYPE_CHECKING:
    from wxkf.kf.runtime import Pipeline

log = logging.getLogger("wxkf.kf.conversation")

WELCOME_CODE_TTL = timedelta(seconds=20)  # wecom-api §5: welcome_code is valid for 20 s
MAX_DEBOUNCE_ROUNDS = 5  # a customer typing forever is still answered after 5 windows


RESPONDER_FALLBACK = "抱歉，系统暂时繁忙，已为您通知人工客服，请稍候。"


class ConcurrentUpdate(Exception):
    """Another worker processed these rows first; this attempt changes nothing."""


# The pause, the cached service_state (with the moment it was true) and the budget of one
# conversation, read in one query.
_CONVERSATION_STATE = """
SELECT paused_until, window_started_at, replies_used,
       CASE WHEN state_checked_at > now() - make_interval(secs => %s) THEN service_state END,
       servicer_userid, state_checked_at
FROM kf_conversations WHERE open_kfid = %s AND external_userid = %s
"""
# A `_CONVERSATION_STATE` row: pause, window, used, state, servicer, state as of.
ConversationState = tuple[Any, ...]
NO_STATE: ConversationState = (None, None, 0, None, None, None)
SEND_TIME_RESOLUTION = timedelta(seconds=1)  # wecom-api §3: send_time is in whole seconds


async def converse(pipeline: Pipeline, conversation: Conversation) -> None:
    with log_context(open_kfid=conversation.open_kfid, external_userid=conversation.external_userid):
        rows, state = await _wait_for_quiet(pipeline, conversation)
        if rows:
            unsent = await _process(pipeline, conversation, rows, state)
            await deliver(pipeline, conversation, unsent)


async def _snapshot(
    pipeline: Pipeline, conversation: Conversation
) -> tuple[list[dict[str, Any]], list[InboundRow], ConversationState]:
    """Unsent outbox rows, pending inbound rows and the conversation's state: one round trip."""
    key = (conversation.open_kfid, conversation.external_userid)
    async with pipeline.pool.connection() as conn, conn.pipeline():
        unsent = conn.cursor(row_factory=dict_row)
        inbound = conn.cursor(row_factory=dict_row)
        state = conn.cursor()
        await unsent.execute(outbox.PENDING, key)
        await inbound.execute(ledger.PENDING_ROWS, key)
        await state.execute(_CONVERSATION_STATE, (pipeline.settings.kf_state_cache_seconds, *key))
        return (
            list(await unsent.fetchall()),
            [InboundRow(**row) for row in await inbound.fetchall()],
            await state.fetchone() or NO_STATE,
        )


async def _wait_for_quiet(
    pipeline: Pipeline, conversation: Conversation
) -> tuple[list[InboundRow], ConversationState | None]:
    """Send what an earlier run left in the outbox, then wait until the customer stops typing.

    Returns the pending rows and the conversation's state read with them (None: read it again).
    """
    debounce = pipeline.settings.kf_debounce_seconds
    leftovers_sent = False
    rounds = 0
    while True:
        unsent, rows, state = await _snapshot(pipeline, conversation)
        if unsent and not leftovers_sent:
            # Order, and recovery after a crash: what is already in the outbox goes first. Sending
            # may change the cached state (95018 forgets it), so everything is read again after.
            await deliver(pipeline, conversation, unsent)
            leftovers_sent = True
            continue
        customer = [r.age_seconds for r in rows if r.origin == ORIGIN_CUSTOMER]
        if not customer or debounce <= 0 or min(customer) >= debounce:
            return rows, state
        await asyncio.sleep(debounce - min(customer))
        rounds += 1
        if rounds >= MAX_DEBOUNCE_ROUNDS:
            return rows, None  # the rows read before the last wait; the state is read afresh


async def _process(
    pipeline: Pipeline, conversation: Conversation, rows: list[InboundRow], state: ConversationState | None
) -> list[dict[str, Any]] | None:
    """Handle the rows in order; returns the unsent outbox rows after answering (None: not read)."""
    batch: list[InboundRow] = []
    if any(row.msgtype == "event" or row.origin != ORIGIN_CUSTOMER for row in rows):
        state = None  # events and servicer messages change the pause and the state: read it afresh
    for row in rows:
        if row.msgtype == "event":
            recalled = await _handle_event(pipeline, conversation, row)
            if recalled:
                batch = [r for r in batch if r.msgid != recalled]
        elif row.origin == ORIGIN_SERVICER:
            await _servicer_wrote(pipeline, conversation, row, batch)
            batch = []
        elif row.origin == ORIGIN_CUSTOMER:
            batch.append(row)
        else:
            async with pipeline.pool.connection() as conn:
                await ledger.mark(conn, [row.id], "handled")
    if batch:
        batch, media = await prepare_batch(pipeline, conversation, batch)
        if batch:
            return await _answer(pipeline, conversation, batch, state, media)
    return None


# --- events (wecom-api §3 event table) ------------------------------------------------------------


async def _handle_event(pipeline: Pipeline, conversation: Conversation, row: InboundRow) -> str | None:
    """Handle one event row; returns the msgid a user_recall_msg recalled, if any."""
    event = row.event
    kind = row.event_type or ""
    recalled: str | None = None
    async with pipeline.pool.connection() as conn, conn.transaction():
        if kind == "enter_session":
            await _welcome(pipeline, conn, conversation, row)
        elif kind == "msg_send_fail":
            fail_type = event.get("fail_type")
            found = await outbox.mark_send_fail(
                conn, conversation.open_kfid, str(event.get("fail_msgid")), fail_type
            )
            log.warning(
                "消息发送失败 / msg_send_fail: msgid=%s fail_type=%s %s%s",
                event.get("fail_msgid"),
                fail_type,
                outbox.FAIL_TYPES.get(fail_type if isinstance(fail_type, int) else 0, ""),
                "" if found else "（不是本服务发出的消息 / not sent by this service）",
                extra={"decision": "send_failed"},
            )
            await ledger.count(conn, f"kf.send_fail.{fail_type}")
        elif kind == "session_status_change":
            # wecom-api §3: change_type 1 接入 / 2 转接 / 4 重新接入 → 3 with the new servicer; 3 结束 → 4.
            change = event.get("change_type")
            # The state is stamped with the event's time: a customer message after it is newer.
            if change == 3:
                await store_state(conn, conversation, 4, None, row.send_time)
                # The servicer's pause belongs to the session that just ended (wecom-api §6).
                pause = timedelta(minutes=pipeline.settings.kf_pause_minutes)
                if await end_servicer_pause(conn, conversation, pause, row.send_time):
                    log.info(
                        "会话已结束，接待人员的暂停随之结束 / the session ended: so did the servicer's pause",
                        extra={"decision": "pause_ended"},
                    )
            elif change in (1, 2, 4):
                await store_state(conn, conversation, 3, event.get("new_servicer_userid"), row.send_time)
            else:
                await store_state(conn, conversation, None, None)
            log.info(
                "会话状态变更 / session_status_change change_type=%s",
                change,
                extra={"decision": "state_event"},
            )
        elif kind == "user_recall_msg":
            recalled = str(event.get("recall_msgid") or "")
            cur = await conn.execute(
                "UPDATE kf_inbound SET status = 'recalled', processed_at = now() "
                "WHERE open_kfid = %s AND msgid = %s AND status = 'pending'",
                (conversation.open_kfid, recalled),
            )
            log.info(
                "客户撤回消息 / user recalled a message: %s",
                "未回复，已丢弃 / dropped before answering"
                if cur.rowcount
                else "已处理过 / already processed",
                extra={"decision": "recalled"},
            )
        await ledger.mark(conn, [row.id], "handled")
    return recalled


async def _welcome(pipeline: Pipeline, conn: Any, conversation: Conversation, row: InboundRow) -> None:
    code = row.event.get("welcome_code")
    account = await pipeline.accounts.effective(conversation.open_kfid)
    text = account.welcome_text.strip()
    menu = account.welcome_menu.msgmenu(text) if account.welcome_menu else None
    if not code or not (text or menu):
        return
    if datetime.now(UTC) - row.send_time > WELCOME_CODE_TTL:
        log.info(
            "欢迎语 code 已过期（超过 20 秒），不发送 / welcome_code expired",
            extra={"decision": "welcome_late"},
        )
        return
    await outbox.enqueue_welcome(conn, conversation, code=str(code), text=text, source=row.msgid, menu=menu)


async def _servicer_wrote(
    pipeline: Pipeline, conversation: Conversation, row: InboundRow, batch: list[InboundRow]
) -> None:
    pause = timedelta(minutes=pipeline.settings.kf_pause_minutes)
    async with pipeline.pool.connection() as conn, conn.transaction():
        await ledger.mark(conn, [r.id for r in batch], "skipped", Reason.SERVICER_REPLIED)
        await ledger.mark(conn, [row.id], "handled")
        await conn.execute(
            """
            INSERT INTO kf_conversations (open_kfid, external_userid, paused_until) VALUES (%s, %s, %s)
            ON CONFLICT (open_kfid, external_userid) DO UPDATE
            SET paused_until = greatest(kf_conversations.paused_until, EXCLUDED.paused_until), updated_at = now()
            """,
            (conversation.open_kfid, conversation.external_userid, row.send_time + pause),
        )
    log.info(
        "接待人员 %s 发了消息，机器人暂停 %g 分钟 / a servicer wrote; bot paused",
        row.servicer_userid or "?",
        pipeline.settings.kf_pause_minutes,
        extra={"decision": "paused"},
    )


# --- answering ------------------------------------------------------------------------------------


async def _skip(
    pipeline: Pipeline,
    batch: list[InboundRow],
    reason: Reason,
    detail: str = "",
    *,
    remember: tuple[Conversation, SessionState] | None = None,
) -> None:
    """Record why `batch` gets no answer (and cache the state WeCom just told us): one round trip."""
    async with pipeline.pool.connection() as conn, conn.pipeline(), conn.transaction():
        if remember is not None:
            await store_state(
                conn, remember[0], remember[1].state, remember[1].servicer_userid, remember[1].checked_at
            )
        await ledger.start_mark(conn, [r.id for r in batch], "skipped", reason)
        await ledger.count(conn, f"kf.skipped.{reason.value}", len(batch))
    log.info(
        "未回复 %d 条消息 / not answered: %s%s",
        len(batch),
        reason.explain,
        detail,
        extra={"decision": reason.value},
    )


def _written_since(cached_state: int, as_of: datetime | None, batch: list[InboundRow]) -> bool:
    """Whether the customer wrote after the cached state was true, in a way that changes it.

    wecom-api §6: a customer message moves an ended session (4) to a new one (0, then routed by
    接待方式); in states 0-3 it changes nothing. send_time is in whole seconds, so a message is only
    known to be older than the state when its whole second is.
    """
    if cached_state != 4:
        return False
    newest = max(r.send_time for r in batch)
    return as_of is None or as_of < newest + SEND_TIME_RESOLUTION


async def _state_while_paused(
    pipeline: Pipeline,
    conversation: Conversation,
    cached_state: int | None,
    as_of: datetime | None,
    batch: list[InboundRow],
) -> tuple[Conversation, SessionState] | None:
    """While paused: the state as an answer would read it, to cache (None: the cache still holds).

    The bot stays quiet, but whoever answers instead (the console's takeover) must see what the
    customer's message did: after an ended session it opened a new one (wecom-api §6), and the
    sync forgot the cached state. A failed read costs only the refresh: the pause holds either way.
    """
    if cached_state is not None and not _written_since(cached_state, as_of, batch):
        return None
    try:
        return conversation, await pipeline.states.fetch(conversation)
    except APIError as exc:
        if retry_later(exc):
            raise
        await record_api_error(pipeline.pool, exc, conversation, "读取会话状态 / service_state/get")
        return None


async def _answer(
    pipeline: Pipeline,
    conversation: Conversation,
    batch: list[InboundRow],
    found: ConversationState | None,
    media: dict[str, MediaContent],
) -> list[dict[str, Any]] | None:
    """Answer `batch`; returns the conversation's unsent outbox rows after queueing (None: not read)."""
    settings = pipeline.settings
    if found is None:
        async with pipeline.pool.connection() as conn:
            cur = await conn.execute(
                _CONVERSATION_STATE,
                (settings.kf_state_cache_seconds, conversation.open_kfid, conversation.external_userid),
            )
            found = await cur.fetchone() or NO_STATE
    paused_until, window, used, cached_state, cached_servicer, state_as_of = found
    if paused_until and paused_until > datetime.now(UTC):
        await _skip(
            pipeline,
            batch,
            Reason.PAUSED,
            f" until {paused_until:%H:%M:%S}",
            remember=await _state_while_paused(pipeline, conversation, cached_state, state_as_of, batch),
        )
        return None

    # A state fetched from WeCom is cached in the transaction that records the outcome, not alone.
    remember: tuple[Conversation, SessionState] | None = None
    try:
        if cached_state is not None and not _written_since(cached_state, state_as_of, batch):
            state = SessionState(cached_state, cached_servicer, state_as_of)
        else:
            state = await pipeline.states.fetch(conversation)
            remember = (conversation, state)
    except APIError as exc:
        if retry_later(exc):
            raise
        await record_api_error(pipeline.pool, exc, conversation, "读取会话状态 / service_state/get")
        await _skip(pipeline, batch, Reason.SEND_REFUSED, f" (errcode {exc.errcode})")
        return None
    account = await pipeline.accounts.effective(conversation.open_kfid)
    action, reason = decide(state.state, account.session_policy)
    if action is Action.END_SESSION:
        try:
            # Auto-end: end the human session with its servicer; the next customer message opens a new one.
            code = await pipeline.states.trans(conversation, 4, state.servicer_userid)
            remember = None  # trans cached the state it reached
            await handoff.queue_end_notice(pipeline, conversation, code, source=batch[-1].msgid)
        except APIError as exc:
            if retry_later(exc):
                raise
            await record_api_error(pipeline.pool, exc, conversation, "结束人工会话 / service_state/trans → 4")
            await _skip(
                pipeline,
                batch,
                Reason.HUMAN_SERVING,
                f" (结束失败 / end failed: {exc.errcode})",
                remember=remember,
            )
            return None
    if reason is not None:
        await _skip(pipeline, batch, reason, f" [state={state_name(state.state)}]", remember=remember)
        return None

    remaining = BudgetState(window, used).remaining(datetime.now(UTC))
    if remaining < 1:
        await _skip(pipeline, batch, Reason.BUDGET_USED_UP, remember=remember)
        return None

    messages = [
        to_inbound_message(r.msgid, r.msgtype, r.body, r.send_time, media.get(r.msgid)) for r in batch
    ]
    try:
        reply = await pipeline.responder.respond(
            ReplyRequest(conversation=conversation, messages=messages, remaining_budget=remaining)
        )
    except Exception as exc:
        if connection_lost(exc) is not None:
            raise  # not the responder's fault: the job is retried once the database is back
        # The customer must not be met with silence because the responder broke: say so, ask for a human.
        log.exception(
            "应答器出错，已发送兜底回复并转人工 / the responder failed: sent the fallback and asked for a human",
            extra={"decision": "responder_failed"},
        )
        async with pipeline.pool.connection() as conn:
            await ledger.count(conn, "kf.responder_error")
        reply = Reply(text=RESPONDER_FALLBACK, handoff=True)
    if reply.handoff:
        reply = await handoff.settle(pipeline, conversation, reply)  # only to someone who can receive
    # The reply's other messages (a KB entry's image, a menu) take budget too; the text comes first.
    extra = reply.messages[: max(0, remaining - 1)] if reply.text.strip() else reply.messages[:remaining]
    parts = split_text(reply.text, remaining - len(extra))
    unsent: list[dict[str, Any]] | None = None
    if not parts and not extra:
        await _skip(pipeline, batch, Reason.NO_REPLY, remember=remember)
    else:
        if parts and len(parts) + len(extra) == remaining and settings.kf_closing_hint.strip():
            # wecom-api §4: this is the window's last message; invite the customer to write again.
            parts = add_closing_hint(parts, settings.kf_closing_hint)
        # Pipeline mode: the transaction takes two round trips instead of one per statement — the
        # budget's row lock needs its answer (BEGIN, mark and the lock go together), the rest goes
        # with the COMMIT, and the outbox is read right after it for sending.
        async with pipeline.pool.connection() as conn, conn.pipeline():
            async with conn.transaction():
                if remember is not None:
                    await store_state(
                        conn, conversation, state.state, state.servicer_userid, state.checked_at
                    )
                marked = await ledger.start_mark(conn, [r.id for r in batch], "answered")
                msgids = await outbox.enqueue_messages(
                    conn,
                    conversation,
                    [("text", {"content": p}) for p in parts] + extra,
                    kind="reply",
                    source=batch[-1].msgid,
                )
                # The budget's lock was answered, so the mark's count (sent before it) is known.
                if marked.rowcount != len(batch):
                    raise ConcurrentUpdate()
                await ledger.count(conn, "kf.replied", len(batch))
            pending = conn.cursor(row_factory=dict_row)
            await pending.execute(outbox.PENDING, (conversation.open_kfid, conversation.external_userid))
            unsent = list(await pending.fetchall())
        log.info(
            "已回复 %d 条客户消息，%d 条回复，剩余额度 %d / answered %d message(s) with %d part(s)",
            len(batch),
            len(msgids),
            remaining - len(msgids),
            len(batch),
            len(msgids),
            extra={"decision": "replied", "content": reply.text},
        )
    if reply.handoff:
        await _handoff(pipeline, conversation, reply, unsent)
        return None  # the handoff's notice is in the outbox now: read it again
    return unsent


async def _handoff(
    pipeline: Pipeline, conversation: Conversation, reply: Reply, unsent: list[dict[str, Any]] | None
) -> None:
    """The responder asked for a human: trans → 3 with the servicer, or → 2 (the pool) (wecom-api §6)."""
    try:
        await deliver(pipeline, conversation, unsent)  # the reply goes out while the bot may still send
        await handoff.hand_off(pipeline, conversation, reply)
    except APIError as exc:
        if retry_later(exc):
            raise
        to_state = 3 if reply.handoff_servicer else 2
        await record_api_error(pipeline.pool, exc, conversation, f"转人工 / service_state/trans → {to_state}")


# --- sending --------------------------------------------------------------------------------------


async def deliver(
    pipeline: Pipeline, conversation: Conversation, rows: list[dict[str, Any]] | None = None
) -> int:
    """Send the conversation's pending outbox rows in order; returns how many were sent.

    `rows`: the pending rows when the caller has just read them (`outbox.PENDING`), else None.

    What may succeed later (throttling, no answer, a revoked token: `retry_later`) propagates so the
    job is retried with backoff, keeping the order; any other WeCom error is recorded on its row.
    """
    sent = 0
    if rows is None:
        async with pipeline.pool.connection() as conn:
            rows = await outbox.pending(conn, conversation)
    for row in rows:
        async with pipeline.pool.connection() as conn:
            # Counted before sending: on a retry the count tells a duplicate-msgid answer apart.
            await outbox.mark_attempt(conn, row["id"])
        try:
            await send_row(pipeline, conversation, row)
        except MediaNotFound as exc:
            # A knowledge-base attachment removed from the store since: this message cannot be sent.
            async with pipeline.pool.connection() as conn:
                await outbox.mark_failed(conn, row["id"], None, str(exc))
            continue
        except MediaStoreError:
            raise
        except APIError as exc:
            if retry_later(exc):
                raise  # the job is retried with backoff; the outbox keeps the order
            async with pipeline.pool.connection() as conn, conn.transaction():
                if row["attempts"] >= 1 and outbox.is_duplicate_msgid(exc.errcode, exc.errmsg):
                    await outbox.mark_sent(
                        conn, row["id"], "duplicate msgid: an earlier attempt reached WeCom"
                    )
                    sent += 1
                    continue
                await outbox.mark_failed(conn, row["id"], exc.errcode, exc.errmsg)
                if isinstance(exc, SessionStateError):
                    await store_state(conn, conversation, None, None)
            await record_api_error(pipeline.pool, exc, conversation, f"发送消息 / send ({row['kind']})")
            continue
        async with pipeline.pool.connection() as conn:
            await outbox.mark_sent(conn, row["id"])
        sent += 1
    return sent
