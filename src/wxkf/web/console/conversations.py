"""Conversations as staff see them, and what staff do to them — no FastAPI here.

    list_conversations   one row per customer of a kf account: state, budget, last message, bot status
    transcript           the thread in order: customer, bot, staff, events, and what was not sent, why
    take_over / hand_back  the bot pauses for this customer while a staff member serves from the console
    reply                a staff message through the pipeline's budget and outbox (`Pipeline.queue_texts`)
    transfer / end       the native WeCom moves: service_state/trans → 3 with a servicer, → 4

A takeover pauses the bot with the pipeline's own pause (`kf_conversations.paused_until`, far in the
future while the takeover lasts); the session stays in state 1, so the console can send. A reply is
refused in words — never sent — when the session is not in state 0 or 1 (wecom-api §4: 95018), when
the 48 h / 5 budget has nothing left (the staff reply is never the 6th message of a window), or when
the text is empty or over 2048 bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from wxkf.db.text import without_nul
from wxkf.kf.budget import MESSAGES_PER_WINDOW, WINDOW, BudgetState
from wxkf.kf.inbound import render_text
from wxkf.kf.ledger import ORIGIN_CUSTOMER, ORIGIN_SERVICER, ORIGIN_SYSTEM
from wxkf.kf.outbox import FAIL_TYPES, outbox_msgid
from wxkf.kf.policy import SENDABLE_STATES, Reason, state_name
from wxkf.kf.responder import Conversation
from wxkf.kf.runtime import PipelineNotConfigured
from wxkf.wecom.catalog import entry_for
from wxkf.wecom.errors import APIError, WeComError

from . import audit
from .auth import Staff

if TYPE_CHECKING:
    from wxkf.kf.runtime import Pipeline

# While a console takeover lasts, the pipeline's pause runs to here (the bot checks `paused_until`).
TAKEOVER_PAUSE = datetime(9999, 1, 1, tzinfo=UTC)
MAX_TEXT_BYTES = 2048  # wecom-api §4: a text message is at most 2048 bytes
LIST_LIMIT = 100
TRANSCRIPT_LIMIT = 300
# A customer's last message left unanswered for one of these reasons needs a person.
NEEDS_HUMAN_REASONS = (
    Reason.QUEUED_FOR_HUMAN.value,
    Reason.BUDGET_USED_UP.value,
    Reason.NO_REPLY.value,
    Reason.SEND_REFUSED.value,
)
OUTBOX_KINDS = {
    "reply": "机器人 / bot",
    "welcome": "欢迎语 / welcome",
    "push": "推送 / push",
    "tool": "工具 / tool",
    "contact": "客户联系 / contact",
    "staff": "人工 / staff",
}


class ConsoleRefusal(Exception):
    """The console will not do what was asked; the message says why (Chinese first, English beside it)."""


# --- the list -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    needs_human: bool = False
    paused: bool = False
    state: int | None = None
    account: str = ""
    query: str = ""


@dataclass(frozen=True)
class Budget:
    remaining: int
    expires_at: datetime | None

    @classmethod
    def of(cls, window_started_at: datetime | None, used: int, now: datetime) -> Budget:
        remaining = BudgetState(window_started_at, used).remaining(now)
        expires = window_started_at + WINDOW if window_started_at is not None else None
        return cls(remaining, expires if expires is not None and expires > now else None)

    @property
    def explain(self) -> str:
        if self.expires_at is None:
            return "客户 48 小时内没有发消息，等客户再次发消息 / no customer message in 48 h: wait for the customer"
        if self.remaining == 0:
            return (
                f"本窗口 {MESSAGES_PER_WINDOW} 条已用完，等客户再次发消息 / the {MESSAGES_PER_WINDOW} messages "
                "of this window are used up: wait for the customer to write again"
            )
        return (
            f"剩余 {self.remaining}/{MESSAGES_PER_WINDOW} 条 / {self.remaining} of {MESSAGES_PER_WINDOW} left"
        )


@dataclass(frozen=True)
class ConversationRow:
    open_kfid: str
    external_userid: str
    nickname: str
    service_state: int | None
    state_checked_at: datetime | None
    servicer_userid: str | None
    budget: Budget
    last_text: str
    last_who: str
    last_at: datetime | None
    paused_until: datetime | None
    taken_by: str | None
    needs_human: bool

    @property
    def key(self) -> str:
        return f"{self.open_kfid} {self.external_userid}"

    @property
    def state_label(self) -> str:
        return state_name(self.service_state)

    @property
    def reply_blocked(self) -> str:
        """Why a staff reply cannot go now, in words ("" when it can): a disabled send button always says why."""
        if self.service_state is not None and self.service_state not in SENDABLE_STATES:
            return _state_refusal(self.service_state, self.servicer_userid)
        if self.budget.remaining < 1:
            return f"不能发送 / cannot send: {self.budget.explain}"
        return ""

    def bot_status(self, local: Callable[[datetime | None, str], str]) -> str:
        """What the bot does for this customer; `local` shows a time in the console's display timezone."""
        if self.taken_by:
            return f"人工接管中（{self.taken_by}）/ taken over by {self.taken_by}"
        if self.paused_until is not None and self.paused_until > datetime.now(UTC):
            until = local(self.paused_until, "%H:%M")
            return f"暂停至 {until} / paused until {until}"
        if self.service_state == 2:
            return "排队等待人工，机器人不发送 / queued for a person: the bot stays quiet"
        if self.service_state == 3:
            return "人工接待，机器人不发送 / a human serves: the bot stays quiet"
        return "机器人接待 / bot answering"


_LIST = """
SELECT c.open_kfid, c.external_userid, c.window_started_at, c.replies_used, c.paused_until,
       c.service_state, c.servicer_userid, c.state_checked_at, c.updated_at,
       coalesce(cu.nickname, '') AS nickname, t.username AS taken_by,
       li.origin AS in_origin, li.msgtype AS in_msgtype, li.body AS in_body, li.send_time AS in_at,
       lo.body AS out_body, lo.msgtype AS out_msgtype, lo.kind AS out_kind, lo.created_at AS out_at,
       (t.username IS NULL AND (c.service_state = 2 OR lc.status = 'skipped' AND lc.reason = ANY(%(reasons)s)
        OR EXISTS (SELECT 1 FROM console_unanswered u WHERE u.open_kfid = c.open_kfid AND u.msgid = lc.msgid
                   AND u.kind = 'handoff')))
        AS needs_human
FROM kf_conversations c
LEFT JOIN console_customers cu ON cu.external_userid = c.external_userid
LEFT JOIN console_takeovers t ON t.open_kfid = c.open_kfid AND t.external_userid = c.external_userid
LEFT JOIN LATERAL (
    SELECT origin, msgtype, body, send_time FROM kf_inbound i
    WHERE i.open_kfid = c.open_kfid AND i.external_userid = c.external_userid AND i.msgtype <> 'event'
    ORDER BY i.id DESC LIMIT 1) li ON true
LEFT JOIN LATERAL (
    SELECT msgid, status, reason FROM kf_inbound i
    WHERE i.open_kfid = c.open_kfid AND i.external_userid = c.external_userid AND i.origin = 3
    ORDER BY i.id DESC LIMIT 1) lc ON true
LEFT JOIN LATERAL (
    SELECT body, msgtype, kind, created_at FROM kf_outbox o
    WHERE o.open_kfid = c.open_kfid AND o.external_userid = c.external_userid
    ORDER BY o.id DESC LIMIT 1) lo ON true
WHERE (%(account)s = '' OR c.open_kfid = %(account)s)
  AND (%(customer)s::text IS NULL OR c.external_userid = %(customer)s)
  AND (%(state)s::int IS NULL OR c.service_state = %(state)s)
  AND (NOT %(paused)s OR t.username IS NOT NULL OR c.paused_until > now())
  AND (%(query)s = '' OR c.external_userid ILIKE %(like)s OR cu.nickname ILIKE %(like)s
       OR EXISTS (SELECT 1 FROM kf_inbound s WHERE s.open_kfid = c.open_kfid
                  AND s.external_userid = c.external_userid AND s.body -> 'body' ->> 'content' ILIKE %(like)s)
       OR EXISTS (SELECT 1 FROM kf_outbox s WHERE s.open_kfid = c.open_kfid
                  AND s.external_userid = c.external_userid AND s.body ->> 'content' ILIKE %(like)s))
ORDER BY c.updated_at DESC
LIMIT %(limit)s
"""


def _like(query: str) -> str:
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _inbound_text(msgtype: str, item: dict[str, Any]) -> str:
    """A recorded sync_msg item as one line (the ledger keeps the message body under `body`)."""
    content = item.get("body") or item.get(msgtype)
    return render_text(msgtype, content if isinstance(content, dict) else {})


def _row(r: dict[str, Any], now: datetime) -> ConversationRow:
    last_text, last_who, last_at = "", "", None
    if r["in_at"] is not None:
        last_text = _inbound_text(r["in_msgtype"], r["in_body"])
        last_who = "客户 / customer" if r["in_origin"] == ORIGIN_CUSTOMER else "接待人员 / servicer"
        last_at = r["in_at"]
    if r["out_at"] is not None and (last_at is None or r["out_at"] >= last_at):
        last_text = render_text(r["out_msgtype"], r["out_body"])
        last_who = OUTBOX_KINDS.get(r["out_kind"], r["out_kind"])
        last_at = r["out_at"]
    return ConversationRow(
        open_kfid=r["open_kfid"],
        external_userid=r["external_userid"],
        nickname=r["nickname"],
        service_state=r["service_state"],
        state_checked_at=r["state_checked_at"],
        servicer_userid=r["servicer_userid"],
        budget=Budget.of(r["window_started_at"], r["replies_used"], now),
        last_text=last_text,
        last_who=last_who,
        last_at=last_at,
        paused_until=r["paused_until"],
        taken_by=r["taken_by"],
        needs_human=bool(r["needs_human"]),
    )


async def list_conversations(
    conn: AsyncConnection[Any], filters: Filters, *, limit: int = LIST_LIMIT
) -> list[ConversationRow]:
    rows = [r for r in await _list_rows(conn, filters, limit) if not filters.needs_human or r["needs_human"]]
    now = datetime.now(UTC)
    return [_row(r, now) for r in rows]


async def _list_rows(conn: AsyncConnection[Any], filters: Filters, limit: int) -> list[dict[str, Any]]:
    query = filters.query.strip()
    params = {
        "reasons": list(NEEDS_HUMAN_REASONS),
        "account": filters.account,
        "customer": None,
        "state": filters.state,
        "paused": filters.paused,
        "query": query,
        "like": _like(query),
        "limit": limit if not filters.needs_human else limit * 5,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST, params)
        return list(await cur.fetchall())


async def one_conversation(conn: AsyncConnection[Any], conversation: Conversation) -> ConversationRow | None:
    """The list's row for one conversation (the transcript's status panel)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _LIST,
        {
            "reasons": list(NEEDS_HUMAN_REASONS),
            "account": conversation.open_kfid,
            "customer": conversation.external_userid,
            "state": None,
            "paused": False,
            "query": "",
            "like": "",
            "limit": 1,
        },
    )
    row = await cur.fetchone()
    return _row(row, datetime.now(UTC)) if row is not None else None


_ACCOUNTS_SEEN = "SELECT DISTINCT open_kfid FROM kf_conversations ORDER BY 1"


async def accounts_seen(conn: AsyncConnection[Any]) -> list[str]:
    return [str(r[0]) for r in await (await conn.execute(_ACCOUNTS_SEEN)).fetchall()]


_UNKNOWN_NICKNAMES = """
SELECT DISTINCT c.external_userid FROM kf_conversations c
WHERE c.external_userid = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM console_customers cu WHERE cu.external_userid = c.external_userid)
"""
_STORE_NICKNAME = """
INSERT INTO console_customers (external_userid, nickname) VALUES (%s, %s)
ON CONFLICT (external_userid) DO UPDATE SET nickname = EXCLUDED.nickname, fetched_at = now()
"""


async def learn_nicknames(pipeline: Pipeline, external_userids: Sequence[str]) -> bool | None:
    """Fetch the nicknames the console does not know yet (kf/customer/batchget).

    True when some were new, False when there was nothing to learn, None when WeCom could not say
    (not configured, unreachable, refused): the list shows the ids meanwhile. Ids WeCom calls invalid
    are remembered without a name, so they are not asked for again.
    """
    async with pipeline.pool.connection() as conn:
        cur = await conn.execute(_UNKNOWN_NICKNAMES, (list(external_userids),))
        unknown = [str(r[0]) for r in await cur.fetchall()]
    if not unknown:
        return False
    try:
        response = await pipeline.client.batchget_customers(unknown[:100])
    except (PipelineNotConfigured, WeComError):
        return None
    names = {c.external_userid: c.nickname for c in response.customer_list}
    names.update(dict.fromkeys(response.invalid_external_userid, ""))
    async with pipeline.pool.connection() as conn, conn.transaction():
        for external_userid, nickname in names.items():
            await conn.execute(_STORE_NICKNAME, (external_userid, without_nul(nickname)))
    return bool(names)


# --- the transcript -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One line of a transcript."""

    at: datetime
    who: str  # customer | bot | staff | servicer | event | console
    text: str
    label: str
    note: str = ""  # what was not sent / not answered, and why
    problem: bool = False
    # The order: when wxkf recorded it, by the database's clock (WeCom's send_time has whole seconds).
    order: datetime | None = None


_THREAD_INBOUND = """
SELECT id, msgid, origin, msgtype, event_type, servicer_userid, send_time, body, status, reason, processed_at,
       recorded_at
FROM kf_inbound WHERE open_kfid = %s AND external_userid = %s ORDER BY id DESC LIMIT %s
"""
_THREAD_OUTBOX = """
SELECT id, msgid, kind, msgtype, body, status, errcode, error, fail_type, created_at, sent_at
FROM kf_outbox WHERE open_kfid = %s AND external_userid = %s ORDER BY id DESC LIMIT %s
"""

_EVENT_TEXT = {
    "enter_session": "客户进入会话 / the customer opened the chat",
    "msg_send_fail": "消息发送失败 / a message could not be delivered",
    "user_recall_msg": "客户撤回了一条消息 / the customer recalled a message",
    "servicer_status_change": "接待人员状态变更 / a servicer's status changed",
}
_CHANGE_TYPES = {
    1: "接待人员接入 / a servicer took the session",
    2: "转接 / transferred to another servicer",
    3: "会话结束 / the session ended",
    4: "重新接入 / a servicer re-opened the session",
}


def _event_text(row: dict[str, Any]) -> str:
    found = row["body"].get("event")
    event: dict[str, Any] = found if isinstance(found, dict) else {}
    kind = row["event_type"] or ""
    if kind == "session_status_change":
        change_type = event.get("change_type")
        change = (
            _CHANGE_TYPES.get(change_type, f"change_type={change_type}")
            if isinstance(change_type, int)
            else ""
        )
        servicer = event.get("new_servicer_userid") or event.get("old_servicer_userid") or ""
        return f"会话状态变更 / session changed: {change}" + (f"（{servicer}）" if servicer else "")
    if kind == "msg_send_fail":
        fail_type = event.get("fail_type")
        explained = FAIL_TYPES.get(fail_type, "") if isinstance(fail_type, int) else ""
        return f"消息发送失败 / delivery failed: {explained or f'fail_type={fail_type}'}"
    return _EVENT_TEXT.get(kind, f"事件 / event: {kind}")


def _explain_error(errcode: int | None, error: str | None) -> str:
    if errcode is None:
        return error or ""
    entry = entry_for(errcode)
    fix = f" — {entry.fix_zh[0]} / {entry.fix_en[0]}" if entry is not None and entry.fix_zh else ""
    return f"errcode {errcode}: {entry.title_zh if entry else (error or '')}{fix}"


def _takeover_spans(actions: list[dict[str, Any]]) -> list[tuple[datetime, datetime | None]]:
    spans: list[tuple[datetime, datetime | None]] = []
    start: datetime | None = None
    for action in actions:
        if action["action"] == "takeover" and start is None:
            start = action["at"]
        elif action["action"] == "handback" and start is not None:
            spans.append((start, action["at"]))
            start = None
    if start is not None:
        spans.append((start, None))
    return spans


def _during(spans: list[tuple[datetime, datetime | None]], at: datetime) -> bool:
    return any(start <= at and (end is None or at <= end) for start, end in spans)


async def transcript(conn: AsyncConnection[Any], conversation: Conversation) -> list[Entry]:
    """The conversation's last messages and events, oldest first, with every refusal explained."""
    key = (conversation.open_kfid, conversation.external_userid)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_THREAD_INBOUND, (*key, TRANSCRIPT_LIMIT))
        inbound = list(await cur.fetchall())
        await cur.execute(_THREAD_OUTBOX, (*key, TRANSCRIPT_LIMIT))
        outbox = list(await cur.fetchall())
    actions = await audit.for_target(conn, audit.conversation_target(*key))
    spans = _takeover_spans(actions)
    senders = {
        str(msgid): str(a["username"])
        for a in actions
        if a["action"] == "reply"
        for msgid in a["detail"].get("msgids", [])
    }
    entries: list[Entry] = []
    for row in inbound:
        if row["origin"] == ORIGIN_SYSTEM or row["msgtype"] == "event":
            entries.append(
                Entry(row["send_time"], "event", _event_text(row), "事件 / event", order=row["recorded_at"])
            )
            continue
        text = _inbound_text(row["msgtype"], row["body"])
        if row["origin"] == ORIGIN_SERVICER:
            who = row["servicer_userid"] or "?"
            entries.append(
                Entry(
                    row["send_time"],
                    "servicer",
                    text,
                    f"接待人员 {who} / servicer (WeCom)",
                    order=row["recorded_at"],
                )
            )
            continue
        note, problem = "", False
        if row["status"] == "skipped":
            reason = row["reason"] or ""
            explained = Reason(reason).explain if reason in Reason._value2member_map_ else reason
            # send_time has WeCom's whole seconds; when the bot decided is what fell in the takeover.
            if reason == Reason.PAUSED.value and _during(spans, row["processed_at"] or row["send_time"]):
                explained = "人工接管中，机器人未回复 / taken over in the console: the bot did not answer"
            note, problem = f"未回复 / not answered: {explained}", reason in NEEDS_HUMAN_REASONS
        elif row["status"] == "recalled":
            note = "已撤回，未回复 / recalled before an answer"
        elif row["status"] == "pending":
            note = "处理中 / being answered"
        entries.append(
            Entry(
                row["send_time"], "customer", text, "客户 / customer", note, problem, order=row["recorded_at"]
            )
        )
    for row in outbox:
        who = "staff" if row["kind"] == "staff" else "bot"
        label = OUTBOX_KINDS.get(row["kind"], str(row["kind"]))
        if row["kind"] == "staff" and row["msgid"] in senders:
            label = f"人工 {senders[row['msgid']]} / staff"
        note, problem = "", False
        if row["status"] == "pending":
            note = "待发送 / waiting to be sent"
        elif row["status"] == "failed":
            detail = _explain_error(row["errcode"], row["error"])
            note, problem = f"未送达 / not delivered: {detail}", True
        entries.append(
            Entry(row["created_at"], who, render_text(row["msgtype"], row["body"]), label, note, problem)
        )
    for action in actions:
        if action["action"] in {"takeover", "handback", "transfer", "end_session"}:
            text = audit.ACTIONS[action["action"]]
            servicer = action["detail"].get("servicer")
            entries.append(
                Entry(
                    action["at"],
                    "console",
                    text + (f"（{servicer}）" if servicer else ""),
                    action["username"],
                )
            )
    entries.sort(key=lambda e: e.order or e.at)
    return entries


# --- staff actions --------------------------------------------------------------------------------

_ENSURE_CONVERSATION = """
INSERT INTO kf_conversations (open_kfid, external_userid) VALUES (%s, %s) ON CONFLICT DO NOTHING
"""
_LOCK_CONVERSATION = """
SELECT paused_until FROM kf_conversations WHERE open_kfid = %s AND external_userid = %s FOR UPDATE
"""
_TAKEOVER = """
INSERT INTO console_takeovers (open_kfid, external_userid, user_id, username, previous_pause)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING username
"""
_HOLDER = "SELECT user_id, username, previous_pause FROM console_takeovers WHERE open_kfid = %s AND external_userid = %s"
_PAUSE = "UPDATE kf_conversations SET paused_until = %s, updated_at = now() WHERE open_kfid = %s AND external_userid = %s"
_RELEASE = "DELETE FROM console_takeovers WHERE open_kfid = %s AND external_userid = %s"
_OUTBOX_ROW = "SELECT 1 FROM kf_outbox WHERE open_kfid = %s AND msgid = %s"
_BUDGET = "SELECT window_started_at, replies_used FROM kf_conversations WHERE open_kfid = %s AND external_userid = %s"


@dataclass(frozen=True)
class Holder:
    user_id: int
    username: str


async def holder(conn: AsyncConnection[Any], conversation: Conversation) -> Holder | None:
    row = await (
        await conn.execute(_HOLDER, (conversation.open_kfid, conversation.external_userid))
    ).fetchone()
    return Holder(int(row[0]), str(row[1])) if row is not None else None


def _target(conversation: Conversation) -> str:
    return audit.conversation_target(conversation.open_kfid, conversation.external_userid)


async def take_over(pipeline: Pipeline, conversation: Conversation, staff: Staff, ip: str) -> None:
    """Pause the bot for this customer and make `staff` the one who answers from the console."""
    key = (conversation.open_kfid, conversation.external_userid)
    async with pipeline.pool.connection() as conn, conn.transaction():
        await conn.execute(_ENSURE_CONVERSATION, key)
        locked = await (await conn.execute(_LOCK_CONVERSATION, key)).fetchone()
        previous = locked[0] if locked is not None else None
        if previous == TAKEOVER_PAUSE:
            previous = None
        inserted = await (
            await conn.execute(_TAKEOVER, (*key, staff.id, staff.username, previous))
        ).fetchone()
        if inserted is None:
            current = await holder(conn, conversation)
            if current is not None and current.user_id == staff.id:
                return  # already theirs: nothing to do
            name = current.username if current is not None else "?"
            raise ConsoleRefusal(f"该会话已由 {name} 接管 / {name} has already taken this conversation over")
        await conn.execute(_PAUSE, (TAKEOVER_PAUSE, *key))
        await audit.staff_action(
            conn,
            staff,
            "takeover",
            target=_target(conversation),
            ip=ip,
        )


async def hand_back(pipeline: Pipeline, conversation: Conversation, staff: Staff, ip: str) -> None:
    """End the takeover: the bot answers the customer's next message again."""
    key = (conversation.open_kfid, conversation.external_userid)
    async with pipeline.pool.connection() as conn, conn.transaction():
        await conn.execute(_LOCK_CONVERSATION, key)
        row = await (await conn.execute(_HOLDER, key)).fetchone()
        if row is None:
            raise ConsoleRefusal("该会话没有被接管 / this conversation is not taken over")
        user_id, username, previous = row
        if user_id != staff.id and not staff.is_admin:
            raise ConsoleRefusal(
                f"该会话由 {username} 接管，只有本人或管理员可以交还 / only {username} or an admin can hand it back"
            )
        await conn.execute(_RELEASE, key)
        restored = previous if previous is not None and previous > datetime.now(UTC) else None
        await conn.execute(_PAUSE, (restored, *key))
        await audit.staff_action(
            conn,
            staff,
            "handback",
            target=_target(conversation),
            detail={"from": username},
            ip=ip,
        )


def check_reply_text(text: str) -> str:
    body = text.strip()
    if not body:
        raise ConsoleRefusal("回复内容为空 / the reply is empty")
    size = len(body.encode())
    if size > MAX_TEXT_BYTES:
        raise ConsoleRefusal(
            f"回复过长：{size} 字节，企业微信每条最多 {MAX_TEXT_BYTES} 字节 / the reply is {size} bytes; "
            f"WeCom allows {MAX_TEXT_BYTES} per message"
        )
    return body


async def current_state(pipeline: Pipeline, conversation: Conversation) -> tuple[int, str | None]:
    """The session's state, asked from WeCom now (and cached for the pipeline)."""
    with asking_wecom("读取会话状态 / service_state/get"):
        found = await pipeline.states.get(conversation)
    return found.state, found.servicer_userid


@contextlib.contextmanager
def asking_wecom(doing: str) -> Iterator[None]:
    """WeCom's answers as refusals in words: not configured, an errcode with the catalog's hint, unreachable."""
    try:
        yield
    except PipelineNotConfigured as exc:
        raise ConsoleRefusal(str(exc)) from None
    except APIError as exc:
        hint = " ".join(exc.hint.split()) if exc.hint else ""
        raise ConsoleRefusal(
            f"{doing} 失败 / failed: errcode {exc.errcode}" + (f" — {hint}" if hint else "")
        ) from None
    except WeComError as exc:
        raise ConsoleRefusal(
            f"无法连接企业微信：{type(exc).__name__}，请稍后重试 / WeCom could not be reached; try again"
        ) from None


def _state_refusal(state: int, servicer: str | None) -> str:
    if state == 3:
        return (
            f"会话正由接待人员 {servicer or '?'} 在企业微信中接待（state 3），此时发送会被拒绝（95018），"
            f"控制台不会发送；请在企业微信中回复，或先结束会话 / a servicer serves this customer in WeCom "
            "(state 3): sending would fail with 95018, so the console does not send"
        )
    if state == 2:
        return (
            "客户在待接入池排队（state 2），API 不能发送（95018）；可转给接待人员或结束会话 / the customer is "
            "queued for a servicer (state 2): the API cannot send (95018)"
        )
    return (
        f"会话已结束（state {state}），等客户再次发消息后才能回复 / the session is over (state {state}): "
        "wait for the customer to write again"
    )


@dataclass
class ReplyOutcome:
    msgids: list[str] = field(default_factory=list)
    duplicate: bool = False


async def reply(
    pipeline: Pipeline, conversation: Conversation, staff: Staff, text: str, token: str, ip: str
) -> ReplyOutcome:
    """Send a staff message through the budget and the outbox; refuse in words when it cannot go.

    `token` comes with the form, so a form sent twice (a double click, a reload) sends once.
    """
    body = check_reply_text(text)
    if not token or len(token) > 64:
        raise ConsoleRefusal("表单已过期，请刷新页面后重试 / the form expired: reload the page and try again")
    source = f"console:{token}"
    async with pipeline.pool.connection() as conn:
        current = await holder(conn, conversation)
        if current is None or current.user_id != staff.id:
            raise ConsoleRefusal(
                "请先接管该会话再回复（机器人会暂停）/ take the conversation over before replying (the bot pauses)"
                if current is None
                else f"该会话由 {current.username} 接管 / {current.username} has taken this conversation over"
            )
        msgid = outbox_msgid("staff", conversation.open_kfid, source, 1)
        if await (await conn.execute(_OUTBOX_ROW, (conversation.open_kfid, msgid))).fetchone():
            return ReplyOutcome([msgid], duplicate=True)
    state, servicer = await current_state(pipeline, conversation)
    refusal = None if state in SENDABLE_STATES else _state_refusal(state, servicer)
    msgids: list[str] = []
    if refusal is None:
        msgids = await pipeline.queue_texts(conversation, [body], kind="staff", source=source)
        if not msgids:
            async with pipeline.pool.connection() as conn:
                row = await (
                    await conn.execute(_BUDGET, (conversation.open_kfid, conversation.external_userid))
                ).fetchone()
            budget = Budget.of(row[0] if row else None, row[1] if row else 0, datetime.now(UTC))
            refusal = f"没有发送 / not sent: {budget.explain}"
    async with pipeline.pool.connection() as conn:
        await audit.staff_action(
            conn,
            staff,
            "reply" if refusal is None else "reply_refused",
            target=_target(conversation),
            detail={"msgids": msgids} if refusal is None else {"why": refusal},
            ip=ip,
        )
    if refusal is not None:
        raise ConsoleRefusal(refusal)
    return ReplyOutcome(msgids)


async def servicers(pipeline: Pipeline, open_kfid: str) -> list[tuple[str, bool]]:
    """The account's servicers from kf/servicer/list: (userid, receiving now)."""
    with asking_wecom("读取接待人员 / kf/servicer/list"):
        response = await pipeline.client.list_servicers(open_kfid)
    return [(s.userid, s.status in (None, 0)) for s in response.servicer_list if s.userid]


async def transfer(
    pipeline: Pipeline, conversation: Conversation, staff: Staff, servicer: str, ip: str
) -> None:
    """Native WeCom handoff: service_state/trans → 3 with `servicer` (wecom-api §6)."""
    available = dict(await servicers(pipeline, conversation.open_kfid))
    if servicer not in available:
        raise ConsoleRefusal(
            f"{servicer or '?'} 不是该客服账号的接待人员 / not a servicer of this kf account"
        )
    if not available[servicer]:
        raise ConsoleRefusal(f"接待人员 {servicer} 已停止接待 / {servicer} is not receiving now (95019)")
    await _trans(pipeline, conversation, staff, 3, servicer, ip, "transfer")


async def end_session(pipeline: Pipeline, conversation: Conversation, staff: Staff, ip: str) -> None:
    """service_state/trans → 4: the customer's next message opens a new session (wecom-api §6)."""
    state, servicer = await current_state(pipeline, conversation)
    if state == 4:
        raise ConsoleRefusal("会话已经结束（state 4）/ the session is already over (state 4)")
    await _trans(pipeline, conversation, staff, 4, servicer if state == 3 else None, ip, "end_session")


async def _trans(
    pipeline: Pipeline,
    conversation: Conversation,
    staff: Staff,
    to_state: int,
    servicer: str | None,
    ip: str,
    action: str,
) -> None:
    with asking_wecom(f"变更会话状态 / service_state/trans → {to_state}"):
        await pipeline.states.trans(conversation, to_state, servicer)
    async with pipeline.pool.connection() as conn:
        await audit.staff_action(
            conn,
            staff,
            action,
            target=_target(conversation),
            detail={"servicer": servicer} if servicer else {},
            ip=ip,
        )
