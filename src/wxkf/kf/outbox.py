"""The outbox: every outbound message is a row before it is sent, with a deterministic msgid.

Writing the row in the same transaction as the budget reservation means a crash can never send a
message the budget did not allow, nor lose one it did. The msgid is derived from what the message
answers (the customer's msgid + part number), so a retry sends the *same* msgid.

Duplicate msgids: wecom-api §4 says a msgid must be unique within the kf account ("否则接口返回错误");
the errcode is UNCONFIRMED (the simulator uses 40058). A row is retried only after an attempt whose
outcome is unknown (timeout, crash), so when a *retry* is refused with a duplicate-msgid error, the
earlier attempt reached WeCom: the row is marked `sent` (error notes "duplicate msgid"). A
duplicate on the first attempt is a real collision and marks the row `failed`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import ValidationError

from wxkf.db.text import db_json
from wxkf.kf.budget import ReplyBudget
from wxkf.kf.responder import Conversation, OutboxMessage
from wxkf.validation import worded
from wxkf.wecom.errors import InvalidArgumentError
from wxkf.wecom.models import SendMsgRequest

OutboxKind = Literal["reply", "welcome", "notice", "push", "tool", "contact", "staff"]
DUPLICATE_MSGID_ERRCODES = frozenset({40058})  # see the module docstring

# wecom-api §3 msg_send_fail fail_type → what an operator should know.
FAIL_TYPES = {
    0: "未知原因 / unknown",
    1: "客服账号已删除 / kf account deleted",
    2: "应用已关闭 / app closed",
    4: "会话已过期，超过48小时 / session expired (over 48 h)",
    5: "会话已关闭 / session closed",
    6: "超过5条限制 / over the 5-message limit",
    7: "未绑定视频号 / no WeChat Channels bound",
    8: "主体未验证 / entity not verified",
    9: "未绑定视频号且主体未验证 / no Channels and entity not verified",
    10: "用户拒收 / the customer refuses messages",
    11: "企业未有成员登录企业微信App / no member logged in to the WeCom app",
    12: "发送的消息为客服组件禁发的消息类型 / message type forbidden by the kf component",
    13: "安全限制 / security restriction",
}

log = logging.getLogger("wxkf.kf.outbox")


def outbox_msgid(kind: str, open_kfid: str, source: str, part: int) -> str:
    """≤ 32 bytes of [0-9a-zA-Z_-] (wecom-api §4), the same for the same (kind, account, source, part)."""
    digest = hashlib.blake2b(f"{kind}|{open_kfid}|{source}".encode(), digest_size=12).hexdigest()
    return f"{kind[0]}{digest}_{part}"


def is_duplicate_msgid(errcode: int, errmsg: str) -> bool:
    return errcode in DUPLICATE_MSGID_ERRCODES and "msgid" in errmsg.lower()


async def enqueue_texts(
    conn: AsyncConnection[Any],
    conversation: Conversation,
    texts: Sequence[str],
    *,
    kind: OutboxKind,
    source: str,
    budget: ReplyBudget | None = None,
) -> list[str]:
    """Reserve budget for `texts` and write one outbox row per granted text, in the caller's transaction.

    Returns the msgids written (fewer than `texts` when the budget runs out, possibly none). The rows
    are sent by the conversation job: call `wxkf.kf.jobs.defer_converse` after committing.
    Writing the same (kind, source) twice is a no-op for rows that already exist.
    """
    return await enqueue_messages(
        conn, conversation, [("text", {"content": t}) for t in texts], kind=kind, source=source, budget=budget
    )


_INSERT_MESSAGE = """
INSERT INTO kf_outbox (open_kfid, external_userid, msgid, kind, msgtype, body, source_msgid, part)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (open_kfid, msgid) DO NOTHING
"""


async def enqueue_messages(
    conn: AsyncConnection[Any],
    conversation: Conversation,
    messages: Sequence[OutboxMessage],
    *,
    kind: OutboxKind,
    source: str,
    budget: ReplyBudget | None = None,
    now: datetime | None = None,
    keep: int = 0,
) -> list[str]:
    """`enqueue_texts` for messages of any msgtype (wecom-api §4), each checked against WeCom's limits
    first (`InvalidArgumentError` names the field): a body WeCom would refuse never takes budget.
    `keep` messages of the window are left to others (a push keeps one for the customer's question)."""
    for msgtype, body in messages:
        check_outbound(msgtype, body)
    granted = await (budget or ReplyBudget()).reserve(conn, conversation, len(messages), now, keep=keep)
    msgids: list[str] = []
    for part, (msgtype, body) in enumerate(messages[:granted], start=1):
        msgid = outbox_msgid(kind, conversation.open_kfid, source, part)
        await conn.execute(
            _INSERT_MESSAGE,
            (
                conversation.open_kfid,
                conversation.external_userid,
                msgid,
                kind,
                msgtype,
                db_json(body, ensure_ascii=False),
                source,
                part,
            ),
        )
        msgids.append(msgid)
    return msgids


def send_request(conversation: Conversation, row: dict[str, Any]) -> SendMsgRequest:
    """The send_msg request of a pending row (`PENDING`) whose media are already uploaded."""
    msgtype = str(row["msgtype"])
    return SendMsgRequest.model_validate(
        {
            "open_kfid": conversation.open_kfid,
            "touser": conversation.external_userid,
            "msgid": row["msgid"],
            "msgtype": msgtype,
            msgtype: row["body"],
        }
    )


# Stand-ins for media_ids not uploaded yet, so a queued body is checked like the one that is sent.
_UPLOAD_REFS = {"media": "media_id", "thumb_media": "thumb_media_id", "pic_media": "pic_media_id"}


def with_media_ids(body: dict[str, Any], media_id: Callable[[str, dict[str, Any]], str]) -> dict[str, Any]:
    """`body` with each file reference ({"media": {...}}) replaced by what `media_id(name, ref)` gives."""
    resolved = dict(body)
    for ref, field in _UPLOAD_REFS.items():
        if isinstance(resolved.get(ref), dict):
            resolved[field] = media_id(ref, resolved.pop(ref))
    return resolved


def check_outbound(msgtype: str, body: dict[str, Any]) -> None:
    """Refuse a body WeCom would refuse (wecom-api §4), naming the field; file references count as uploaded."""
    try:
        request = send_request(
            Conversation("check", "check"),
            {
                "msgid": None,
                "msgtype": msgtype,
                "body": with_media_ids(body, lambda _name, _ref: "pending-upload"),
            },
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or msgtype
        raise InvalidArgumentError(
            "kf/send_msg",
            field,
            f"{worded(first, '')}（见 wecom-api §4 的 {msgtype} 消息 / see the {msgtype} message in wecom-api §4）",
        ) from None
    request.check("kf/send_msg")


async def enqueue_welcome(
    conn: AsyncConnection[Any],
    conversation: Conversation,
    *,
    code: str,
    text: str,
    source: str,
    menu: dict[str, Any] | None = None,
) -> str:
    """A welcome via send_msg_on_event (the enter_session event's welcome_code).

    With `menu` (a msgmenu body, wecom-api §4) the welcome is that menu message instead."""
    if menu is not None:
        check_outbound("msgmenu", menu)
    return await enqueue_on_event(
        conn,
        conversation,
        kind="welcome",
        code=code,
        text=text,
        source=source,
        msgtype="text" if menu is None else "msgmenu",
        body=menu,
    )


async def enqueue_on_event(
    conn: AsyncConnection[Any],
    conversation: Conversation,
    *,
    kind: OutboxKind,
    code: str,
    text: str,
    source: str,
    msgtype: str = "text",
    body: dict[str, Any] | None = None,
) -> str:
    """A message via send_msg_on_event with `code` (a welcome, a queue or end notice): its own quota
    (1 per code, wecom-api §5), not the budget's. `text`, unless `body` (of `msgtype`) is given."""
    msgid = outbox_msgid(kind, conversation.open_kfid, source, 1)
    await conn.execute(
        """
        INSERT INTO kf_outbox (open_kfid, external_userid, msgid, kind, msgtype, body, code, source_msgid)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (open_kfid, msgid) DO NOTHING
        """,
        (
            conversation.open_kfid,
            conversation.external_userid,
            msgid,
            kind,
            msgtype,
            db_json({"content": text} if body is None else body, ensure_ascii=False),
            code,
            source,
        ),
    )
    return msgid


PENDING = (
    "SELECT id, msgid, kind, msgtype, body, code, attempts FROM kf_outbox "
    "WHERE open_kfid = %s AND external_userid = %s AND status = 'pending' ORDER BY id"
)


async def pending(conn: AsyncConnection[Any], conversation: Conversation) -> list[dict[str, Any]]:
    """The conversation's unsent rows, oldest first (the order they must reach the customer)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(PENDING, (conversation.open_kfid, conversation.external_userid))
        return list(await cur.fetchall())


async def mark_attempt(conn: AsyncConnection[Any], row_id: int) -> None:
    await conn.execute("UPDATE kf_outbox SET attempts = attempts + 1 WHERE id = %s", (row_id,))


async def mark_sent(conn: AsyncConnection[Any], row_id: int, note: str | None = None) -> None:
    await conn.execute(
        "UPDATE kf_outbox SET status = 'sent', sent_at = now(), error = %s WHERE id = %s", (note, row_id)
    )


async def mark_failed(conn: AsyncConnection[Any], row_id: int, errcode: int | None, error: str) -> None:
    await conn.execute(
        "UPDATE kf_outbox SET status = 'failed', errcode = %s, error = %s WHERE id = %s",
        (errcode, error, row_id),
    )


async def mark_send_fail(
    conn: AsyncConnection[Any], open_kfid: str, fail_msgid: str, fail_type: int | None
) -> bool:
    """wecom-api §3 msg_send_fail: WeCom accepted the message, then failed to deliver it."""
    explained = FAIL_TYPES.get(fail_type if fail_type is not None else 0, f"fail_type={fail_type}")
    cur = await conn.execute(
        "UPDATE kf_outbox SET status = 'failed', fail_type = %s, error = %s WHERE open_kfid = %s AND msgid = %s",
        (fail_type, f"消息发送失败 / msg_send_fail: {explained}", open_kfid, fail_msgid),
    )
    return cur.rowcount > 0
