"""Customer-contact tools for the agent: list customers, send, broadcast, read a task's status.

They serve staff only (`Audience.STAFF`, the member is `ToolContext.actor`), never customers. The
sending tools are offered only to members in `CONTACT_STAFF_USERIDS` (`tools_for_member`) and never
create a task on the first call: that call checks everything, stores a preview with a confirmation
token in `contact_confirmations`, and returns both. The model shows the preview; only a later turn
(after the member said yes) may call again with the token, and then the *stored* payload is sent —
the model cannot change the message between preview and send. Every call is audited by the
registry (`agent_tool_calls`).
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from wxkf.agent.tools import Audience, Tool, ToolContext, ToolError
from wxkf.contact.content import MessageContent, check_content, validate_recipients
from wxkf.contact.errors import ConfirmationError, ContactError
from wxkf.contact.service import CUSTOMER_STATUS, ContactService, TaskCreated
from wxkf.wecom.errors import WeComError

SENDING_TOOLS = frozenset({"send_customer_message", "broadcast_customer_message"})
_ISSUED = "contact_confirmations_issued"  # ToolContext.notes key: tokens issued in this turn
PREVIEW_NAMES = 10  # customers named in a preview; the rest are counted

_TASK_SENDER = "SELECT sender FROM contact_tasks WHERE msgid = %s"
_STORE_PREVIEW = """
INSERT INTO contact_confirmations (token, member_userid, action, payload, preview, created_at, expires_at)
VALUES (%(token)s, %(member)s, %(action)s, %(payload)s::jsonb, %(preview)s, %(now)s, %(expires)s)
"""
# Redeeming a token is one statement: only one caller can see it unused and unexpired.
_REDEEM = """
UPDATE contact_confirmations SET used_at = %(now)s
WHERE token = %(token)s AND member_userid = %(member)s AND action = %(action)s
  AND used_at IS NULL AND expires_at > %(now)s
RETURNING payload
"""
_UNREDEEM = "UPDATE contact_confirmations SET used_at = NULL WHERE token = %s"
_CONFIRMED_TASK = "UPDATE contact_confirmations SET msgid = %s WHERE token = %s"


class ListMyCustomers(BaseModel):
    page: int = Field(default=1, ge=1, description="页码 / page number")
    page_size: int = Field(default=20, ge=1, le=50, description="每页条数 / rows per page")


class SendCustomerMessage(BaseModel):
    external_userid: str = Field(description="客户的 external_userid / the customer's external_userid")
    text: str = Field(description="消息文字（≤4000 字节）/ the message text, at most 4000 bytes")
    confirmation_token: str | None = Field(
        default=None,
        description="成员确认预览后，带上第一次调用返回的 token 再调用一次 / after the member confirmed "
        "the preview, call again with the token the first call returned",
    )


class BroadcastCustomerMessage(BaseModel):
    external_userids: list[str] = Field(
        default_factory=list, description="客户 external_userid 列表（≤10000）/ customers, at most 10,000"
    )
    all_customers: bool = Field(
        default=False, description="发给该成员的全部客户 / send to all of the member's customers"
    )
    text: str = Field(description="消息文字（≤4000 字节）/ the message text, at most 4000 bytes")
    confirmation_token: str | None = Field(
        default=None,
        description="成员确认后带上预览返回的 token / the preview's token, after the member said yes",
    )


class CustomerMessageStatus(BaseModel):
    msgid: str = Field(description="群发任务 msgid / the task's msgid")


def _member(context: ToolContext) -> str:
    if context.audience != Audience.STAFF or not context.actor:
        raise ToolError("仅限员工使用 / staff only")
    return context.actor


def _created(created: TaskCreated) -> dict[str, Any]:
    return {
        "msgid": created.msgid,
        "recipients": len(created.recipients),
        "fail_list": created.fail_list,
        "skipped_at_receive_cap": [c.describe() for c in created.capped],
        "member_notified": created.notified,
        "next_step": "成员需在企业微信「客户联系 → 群发助手」确认后才会发送 / the member must confirm the task "
        "in WeCom (客户联系 → 群发助手) before anything is sent",
    }


class ContactTools:
    """The four tools bound to one `ContactService`."""

    def __init__(self, service: ContactService) -> None:
        self.service = service
        self.settings = service.settings
        self.database = service.database

    def tools(self) -> list[Tool[Any]]:
        staff = frozenset({Audience.STAFF})
        return [
            Tool(
                "list_my_customers",
                "列出我（当前员工）的微信客户 / list my WeChat customers (external contacts)",
                ListMyCustomers,
                self.list_my_customers,
                audiences=staff,
            ),
            Tool(
                "send_customer_message",
                "以我的名义给一位客户发消息。第一次调用只返回预览和确认 token，须把预览给我看并等我确认后，"
                "再带 confirmation_token 调用才会创建任务 / send one customer a message as me: the first call "
                "returns a preview and a token; call again with the token only after I said yes",
                SendCustomerMessage,
                self.send_customer_message,
                audiences=staff,
            ),
            Tool(
                "broadcast_customer_message",
                "以我的名义群发给多位客户（同样需要预览和确认）/ send many of my customers a message (preview "
                "and confirmation as for send_customer_message)",
                BroadcastCustomerMessage,
                self.broadcast_customer_message,
                audiences=staff,
            ),
            Tool(
                "customer_message_status",
                "查看我创建的群发任务的发送结果 / show what became of one of my tasks",
                CustomerMessageStatus,
                self.customer_message_status,
                audiences=staff,
            ),
        ]

    def tools_for_member(self, member: str) -> list[Tool[Any]]:
        """What a member is offered: the sending tools only when they are on the allow-list."""
        allowed = member in self.settings.contact_staff
        return [t for t in self.tools() if allowed or t.name not in SENDING_TOOLS]

    # --- handlers -------------------------------------------------------------------------------

    async def list_my_customers(self, context: ToolContext, args: ListMyCustomers) -> dict[str, Any]:
        member = _member(context)
        try:
            page = await self.service.customers(member, page=args.page, page_size=args.page_size)
        except (ContactError, WeComError) as exc:
            raise ToolError(str(exc)) from exc
        return {
            "page": page.page,
            "pages": page.pages,
            "total": page.total,
            "customers": [
                {"external_userid": c.external_userid, "name": c.name, "remark": c.remark}
                for c in page.customers
            ],
        }

    async def send_customer_message(self, context: ToolContext, args: SendCustomerMessage) -> dict[str, Any]:
        payload = {"external_userids": [args.external_userid], "all_customers": False, "text": args.text}
        return await self._two_phase(context, "send_customer_message", payload, args.confirmation_token)

    async def broadcast_customer_message(
        self, context: ToolContext, args: BroadcastCustomerMessage
    ) -> dict[str, Any]:
        if args.all_customers == bool(args.external_userids):
            raise ToolError(
                "请给出 external_userids 或 all_customers 之一 / give external_userids or all_customers"
            )
        payload = {
            "external_userids": args.external_userids,
            "all_customers": args.all_customers,
            "text": args.text,
        }
        return await self._two_phase(context, "broadcast_customer_message", payload, args.confirmation_token)

    async def customer_message_status(
        self, context: ToolContext, args: CustomerMessageStatus
    ) -> dict[str, Any]:
        member = _member(context)
        async with self.database.pool.connection() as conn:
            row = await (await conn.execute(_TASK_SENDER, (args.msgid,))).fetchone()
        if row is None or row[0] != member:
            raise ToolError(f"没有你创建的任务 {args.msgid} / no task {args.msgid} of yours")
        try:
            status = await self.service.status(args.msgid)
        except WeComError as exc:
            raise ToolError(str(exc)) from exc
        return {
            "msgid": status.msgid,
            "cancelled": status.cancelled,
            "member_sent": [{"userid": m.userid, "status": m.explanation} for m in status.members],
            "customers_by_status": {
                f"{code} {CUSTOMER_STATUS.get(code, '?')}": count for code, count in status.counts().items()
            },
            "failures": [
                {"external_userid": f.external_userid, "status": f.explanation} for f in status.failures
            ],
        }

    # --- preview / confirm ----------------------------------------------------------------------

    async def _two_phase(
        self, context: ToolContext, action: str, payload: dict[str, Any], token: str | None
    ) -> dict[str, Any]:
        member = _member(context)
        if member not in self.settings.contact_staff:
            raise ToolError(
                f"成员 {member} 不在 CONTACT_STAFF_USERIDS 中，不能通过助手给客户发消息 / member {member} is not "
                "allowed to send customer messages through the assistant"
            )
        try:
            if token is None:
                return await self._preview(context, member, action, payload)
            return await self._confirm(context, member, action, token)
        except (ContactError, WeComError) as exc:
            raise ToolError(str(exc)) from exc

    async def _preview(
        self, context: ToolContext, member: str, action: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        content = check_content(MessageContent(payload["text"]))
        if payload["all_customers"]:
            ids = await self.service.customer_ids(member, refresh=True)
        else:
            ids = validate_recipients(payload["external_userids"])
            mine = set(await self.service.customer_ids(member))
            strangers = [u for u in ids if u not in mine]
            if strangers:
                raise ToolError(
                    f"这些不是你的客户：{', '.join(strangers[:PREVIEW_NAMES])} / not your customers: "
                    f"{', '.join(strangers[:PREVIEW_NAMES])}"
                )
        ids = validate_recipients(ids)
        counts = {u: await self.service.ledger.received_in_period(u) for u in ids[:PREVIEW_NAMES]}
        limit = self.service.ledger.cap.limit(self.service.clock())
        at_cap = [u for u, n in counts.items() if n >= limit]
        who = ", ".join(ids[:PREVIEW_NAMES]) + (
            f" 等 {len(ids)} 位 / {len(ids)} in all" if len(ids) > PREVIEW_NAMES else ""
        )
        preview = f"发送成员 / from: {member}\n客户 / to: {who}\n内容 / message:\n{content.describe()}"
        if at_cap:
            preview += f"\n⚠ 已达接收上限，将跳过 / at the receive cap, will be skipped: {', '.join(at_cap)}"
        token = secrets.token_urlsafe(12)
        ttl = timedelta(seconds=self.settings.contact_confirmation_ttl_seconds)
        now = self.service.clock()
        async with self.database.pool.connection() as conn:
            await conn.execute(
                _STORE_PREVIEW,
                {
                    "token": token,
                    "member": member,
                    "action": action,
                    "payload": json.dumps({**payload, "external_userids": ids}, ensure_ascii=False),
                    "preview": preview,
                    "now": now,
                    "expires": now + ttl,
                },
            )
        context.notes.setdefault(_ISSUED, set()).add(token)
        return {
            "status": "needs_confirmation",
            "preview": preview,
            "confirmation_token": token,
            "expires_in_seconds": int(ttl.total_seconds()),
            "instruction": "把预览原样给成员看并询问是否发送；成员明确同意后，下一轮再带 confirmation_token 调用。"
            "未获同意不要调用 / show the member this preview and ask; only after they say yes, call again "
            "with confirmation_token in the next turn",
        }

    async def _confirm(self, context: ToolContext, member: str, action: str, token: str) -> dict[str, Any]:
        if token in context.notes.get(_ISSUED, set()):
            # The preview was made in this very turn: the member has not seen it yet.
            raise ConfirmationError(
                "成员还没有看到预览并确认：先把预览给成员看，等成员回复同意 / the member has not seen the preview "
                "yet: show it and wait for their answer"
            )
        now = self.service.clock()
        async with self.database.pool.connection() as conn:
            cur = await conn.execute(
                _REDEEM, {"token": token, "member": member, "action": action, "now": now}
            )
            row = await cur.fetchone()
        if row is None:
            raise ConfirmationError(
                "确认 token 无效、已用过或已过期：请重新生成预览 / the confirmation token is unknown, used or "
                "expired: make a new preview"
            )
        payload: dict[str, Any] = row[0]
        content = MessageContent(payload["text"])
        try:
            if action == "send_customer_message":
                created = await self.service.send(
                    member, payload["external_userids"][0], content, origin="llm"
                )
            else:
                created = await self.service.broadcast(
                    member, payload["external_userids"], content, origin="llm"
                )
        except BaseException:
            # Nothing was created: the member may confirm the same preview again once the cause is fixed.
            async with self.database.pool.connection() as conn:
                await conn.execute(_UNREDEEM, (token,))
            raise
        async with self.database.pool.connection() as conn:
            await conn.execute(_CONFIRMED_TASK, (created.msgid, token))
        return {"status": "created", **_created(created)}
