"""The customer-contact service: a member's customers, tasks to them, and what became of each.

WeCom has no server API for instant one-to-one chat with a member's WeChat customers; a message is a
task created with `externalcontact/add_msg_template` that the member confirms and sends in WeCom
(wecom-api §9). The service checks the message and the receive cap first (`ReceiveLedger`), creates
the task, tells the member by app message that it awaits confirmation, and reads back per-customer
outcomes. The CLI and the LLM tools are thin layers over it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from wxkf.config import Settings
from wxkf.contact.cap import ReceiveCap
from wxkf.contact.content import MessageContent, build_request, validate_recipients
from wxkf.contact.errors import (
    AlreadyCancelledError,
    AlreadySentError,
    CappedCustomer,
    ContactError,
    NotConfiguredError,
    NothingToCancelError,
    ReceiveCapError,
    ReminderLimitError,
    moment,
)
from wxkf.contact.ledger import ReceiveLedger, SendResult, utc_now
from wxkf.db.engine import Database
from wxkf.wecom.client import WeComClient
from wxkf.wecom.errors import APIError, InvalidArgumentError, WeComError
from wxkf.wecom.models import GetGroupMsgListV2Request
from wxkf.wecom.tokens import PostgresTokenStore

REMINDERS_PER_DAY = 3  # wecom-api §9: 24小时内每个群发最多触发三次提醒
REMINDER_WINDOW = timedelta(hours=24)
ERR_REMIND_LIMIT = 41094  # wecom-api §9: 群发提醒超过频率限制
ERR_CANCELLED = 41093  # wecom-api §9: 群发任务已取消
DETAIL_CONCURRENCY = 4  # externalcontact/get calls in flight while filling one page of customers

# wecom-api §9 get_groupmsg_send_result / get_groupmsg_task statuses, explained for people.
CUSTOMER_STATUS = {
    0: "未发送（成员尚未确认）/ not sent yet: the member has not confirmed",
    1: "已发送 / sent",
    2: "发送失败：客户不是该成员的好友 / failed: the customer is not (or no longer) the member's contact",
    3: "发送失败：客户已收到其他群发消息（接收上限）/ failed: the customer already received another "
    "group message (receive cap)",
}
MEMBER_SENT = 2
MEMBER_STATUS = {0: "未发送 / not sent", MEMBER_SENT: "已发送 / sent"}

_COUNT_CUSTOMERS = "SELECT count(*) FROM contact_customers WHERE member_userid = %s"
_STALE_ON_PAGE = """
SELECT external_userid FROM contact_customers
WHERE member_userid = %(member)s AND (fetched_at <= %(cutoff)s OR %(refresh)s)
ORDER BY position LIMIT %(limit)s OFFSET %(offset)s
"""
_PAGE = """
SELECT external_userid, name, remark, corp_name, contact_type, added_at
FROM contact_customers WHERE member_userid = %(member)s
ORDER BY position LIMIT %(limit)s OFFSET %(offset)s
"""
_CUSTOMER_IDS = "SELECT external_userid FROM contact_customers WHERE member_userid = %s ORDER BY position"
_LIST_FETCHED_AT = "SELECT fetched_at FROM contact_customer_lists WHERE member_userid = %s"
_FORGET_GONE = "DELETE FROM contact_customers WHERE member_userid = %(member)s AND NOT (external_userid = ANY(%(ids)s::text[]))"
# New customers get details on first display ('-infinity' = never fetched).
_LIST_CUSTOMERS = """
INSERT INTO contact_customers (member_userid, external_userid, position, fetched_at)
SELECT %(member)s, u, p, '-infinity' FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS t(u, p)
ON CONFLICT (member_userid, external_userid) DO UPDATE SET position = EXCLUDED.position
"""
_LIST_FETCHED = """
INSERT INTO contact_customer_lists (member_userid, fetched_at) VALUES (%s, %s)
ON CONFLICT (member_userid) DO UPDATE SET fetched_at = EXCLUDED.fetched_at
"""
_CUSTOMER_DETAILS = """
UPDATE contact_customers SET name = %(name)s, remark = %(remark)s, corp_name = %(corp)s,
    contact_type = %(type)s, added_at = %(added)s, detail = %(detail)s::jsonb, fetched_at = %(now)s
WHERE member_userid = %(member)s AND external_userid = %(external_userid)s
"""
_INSERT_TASK = """
INSERT INTO contact_tasks (msgid, sender, origin, text_content, attachments, recipients,
                           fail_list, capped, created_at)
VALUES (%(msgid)s, %(sender)s, %(origin)s, %(text)s, %(attachments)s::jsonb, %(recipients)s,
        %(fail_list)s::text[], %(capped)s::text[], %(now)s)
ON CONFLICT (msgid) DO NOTHING
"""
_TASK_CHECKED = "UPDATE contact_tasks SET checked_at = %s WHERE msgid = %s RETURNING cancelled_at IS NOT NULL"
_TASK_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_RECENT_REMINDERS = (
    "SELECT reminded_at FROM contact_reminders WHERE msgid = %s AND reminded_at > %s ORDER BY reminded_at"
)
_RECORD_REMINDER = "INSERT INTO contact_reminders (msgid, reminded_at) VALUES (%s, %s)"
_TASK_CANCELLED = "UPDATE contact_tasks SET cancelled_at = %s WHERE msgid = %s"
_LOCAL_TASKS = "SELECT msgid FROM contact_tasks WHERE msgid = ANY(%s::text[])"


@dataclass(frozen=True)
class Customer:
    external_userid: str
    name: str
    remark: str
    corp_name: str
    contact_type: int  # 1 微信用户 2 企业微信用户 (0: details not fetched)
    added_at: datetime | None


@dataclass(frozen=True)
class CustomerPage:
    member: str
    customers: list[Customer]
    page: int
    page_size: int
    total: int
    fetched_at: datetime

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


@dataclass(frozen=True)
class TaskCreated:
    msgid: str
    sender: str
    recipients: list[str]  # the customers WeCom accepted into the task
    fail_list: list[str]  # wecom-api §9: 无效或无法发送的external_userid
    capped: list[CappedCustomer]  # skipped locally: at the receive cap
    notified: bool  # the member got an app message asking them to confirm
    notify_error: str = ""


@dataclass(frozen=True)
class CustomerOutcome:
    external_userid: str
    sender: str
    status: int
    send_time: datetime | None

    @property
    def explanation(self) -> str:
        return CUSTOMER_STATUS.get(self.status, f"未知状态 {self.status} / unknown status")


@dataclass(frozen=True)
class MemberOutcome:
    userid: str
    status: int
    send_time: datetime | None

    @property
    def explanation(self) -> str:
        return MEMBER_STATUS.get(self.status, f"未知状态 {self.status} / unknown status")


@dataclass(frozen=True)
class TaskStatus:
    msgid: str
    members: list[MemberOutcome]
    customers: list[CustomerOutcome]
    cancelled: bool = False

    def counts(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for c in self.customers:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    @property
    def failures(self) -> list[CustomerOutcome]:
        return [c for c in self.customers if c.status in (2, 3)]


@dataclass(frozen=True)
class CancelOutcome:
    """What cancelling stopped: WeCom stops the members who have not sent yet (wecom-api §9:
    "停止无需成员继续发送的企业群发"); what members already sent has been received and stays sent."""

    msgid: str
    stopped: int  # members who had not sent: they no longer need to
    sent: int  # members who had already sent
    freed: int  # unsent customers who no longer count against the receive cap


@dataclass(frozen=True)
class TaskSummary:
    msgid: str
    creator: str
    created_at: datetime
    create_type: int  # 0 企业发表 1 个人发表
    text: str
    attachments: int
    local: bool  # created through this service


@dataclass
class ContactService:
    settings: Settings
    database: Database
    contact: WeComClient
    app: WeComClient | None = None  # for message/send; None when WECOM_AGENT_* are not set
    clock: Callable[[], datetime] = utc_now
    ledger: ReceiveLedger = field(init=False)

    def __post_init__(self) -> None:
        cap = ReceiveCap(
            self.settings.contact_receive_cap_period,
            self.settings.contact_receive_cap_count,
            self.settings.contact_timezone,
        )
        self.ledger = ReceiveLedger(self.database.pool, cap, self.clock)

    # --- customers --------------------------------------------------------------------------------

    async def customers(
        self, member: str, *, page: int = 1, page_size: int = 20, refresh: bool = False
    ) -> CustomerPage:
        """One page of a member's customers, from the cache while it is younger than the TTL."""
        page, page_size = max(1, page), min(max(1, page_size), 100)
        ttl = timedelta(seconds=self.settings.contact_customer_cache_ttl_seconds)
        now = self.clock()
        listed = await self._ensure_list(member, refresh=refresh)
        window = {"member": member, "limit": page_size, "offset": (page - 1) * page_size}
        async with self.database.pool.connection() as conn:
            counted = await (await conn.execute(_COUNT_CUSTOMERS, (member,))).fetchone()
            total = int(counted[0]) if counted else 0
            cur = await conn.execute(_STALE_ON_PAGE, {**window, "cutoff": now - ttl, "refresh": refresh})
            stale = [r[0] for r in await cur.fetchall()]
        if stale:
            await self._refresh_details(member, stale, now)
        async with self.database.pool.connection() as conn:
            cur = await conn.execute(_PAGE, window)
            customers = [Customer(*r) for r in await cur.fetchall()]
        return CustomerPage(member, customers, page, page_size, total, listed)

    async def customer_ids(self, member: str, *, refresh: bool = False) -> list[str]:
        """All of a member's external_userid (externalcontact/list), through the cache."""
        await self._ensure_list(member, refresh=refresh)
        async with self.database.pool.connection() as conn:
            cur = await conn.execute(_CUSTOMER_IDS, (member,))
            return [r[0] for r in await cur.fetchall()]

    async def _ensure_list(self, member: str, *, refresh: bool) -> datetime:
        """Fetch externalcontact/list when asked or when the cached list is older than the TTL."""
        ttl = timedelta(seconds=self.settings.contact_customer_cache_ttl_seconds)
        now = self.clock()
        async with self.database.pool.connection() as conn:
            row = await (await conn.execute(_LIST_FETCHED_AT, (member,))).fetchone()
        listed: datetime | None = row[0] if row else None
        if refresh or listed is None or listed + ttl <= now:
            await self._refresh_list(member, now)
            return now
        return listed

    async def _refresh_list(self, member: str, now: datetime) -> None:
        ids = list(dict.fromkeys((await self.contact.list_external_contacts(member)).external_userid))
        async with self.database.pool.connection() as conn, conn.transaction():
            await conn.execute(_FORGET_GONE, {"member": member, "ids": ids})
            await conn.execute(_LIST_CUSTOMERS, {"member": member, "ids": ids})
            await conn.execute(_LIST_FETCHED, (member, now))

    async def _refresh_details(self, member: str, external_userids: Sequence[str], now: datetime) -> None:
        gate = asyncio.Semaphore(DETAIL_CONCURRENCY)

        async def one(external_userid: str) -> dict[str, Any]:
            async with gate:
                got = await self.contact.get_external_contact(external_userid)
            follow = next((f for f in got.follow_user if f.userid == member), None)
            return {
                "member": member,
                "external_userid": external_userid,
                "name": got.external_contact.name,
                "remark": follow.remark if follow else "",
                "corp": got.external_contact.corp_name,
                "type": got.external_contact.type,
                "added": datetime.fromtimestamp(follow.createtime, UTC)
                if follow and follow.createtime
                else None,
                "detail": json.dumps(
                    {
                        "external_contact": got.external_contact.model_dump(mode="json"),
                        "follow_user": follow.model_dump(mode="json") if follow else None,
                    },
                    ensure_ascii=False,
                ),
                "now": now,
            }

        rows = await asyncio.gather(*(one(u) for u in external_userids))
        async with self.database.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(_CUSTOMER_DETAILS, rows)

    # --- sending ----------------------------------------------------------------------------------

    async def send(
        self, member: str, external_userid: str, content: MessageContent, *, origin: str = "cli"
    ) -> TaskCreated:
        """A message to one customer: refused with `ReceiveCapError` when they are at the cap."""
        return await self._create(member, validate_recipients([external_userid]), content, origin)

    async def broadcast(
        self,
        member: str,
        external_userids: Sequence[str] | None,
        content: MessageContent,
        *,
        origin: str = "cli",
    ) -> TaskCreated:
        """A message to many customers (None: all of the member's). Capped customers are skipped
        and reported; only when every one is capped is it refused.

        "All" is resolved here rather than by sending `sender` alone (which WeCom reads as every
        customer, wecom-api §9), so the receive cap can be checked per customer first.
        """
        ids = await self.customer_ids(member, refresh=True) if external_userids is None else external_userids
        return await self._create(member, validate_recipients(list(ids)), content, origin)

    async def _create(
        self, member: str, external_userids: list[str], content: MessageContent, origin: str
    ) -> TaskCreated:
        build_request(member, external_userids, content)  # refuse a bad message before reserving
        reservation = await self.ledger.reserve(member, external_userids)
        if not reservation.allowed:
            raise ReceiveCapError(reservation.capped, self.ledger.cap.describe())
        try:
            response = await self.contact.add_msg_template(
                build_request(member, reservation.allowed, content)
            )
        except (APIError, InvalidArgumentError):
            # WeCom (or the client's own check) refused: no task exists, the slots are free again.
            await self.ledger.release(reservation)
            raise
        # Any other failure (timeout, dropped connection) is ambiguous: the task may exist. The
        # reservation keeps counting until it goes stale, so the cap errs on the side of the customer.
        await self.ledger.commit(reservation, response.msgid, response.fail_list)
        accepted = [u for u in reservation.allowed if u not in set(response.fail_list)]
        async with self.database.pool.connection() as conn:
            await conn.execute(
                _INSERT_TASK,
                {
                    "msgid": response.msgid,
                    "sender": member,
                    "origin": origin,
                    "text": content.text,
                    "attachments": json.dumps(
                        [a.model_dump(mode="json", exclude_none=True) for a in content.attachments],
                        ensure_ascii=False,
                    ),
                    "recipients": len(accepted),
                    "fail_list": list(response.fail_list),
                    "capped": [c.external_userid for c in reservation.capped],
                    "now": self.clock(),
                },
            )
        notified, notify_error = await self._notify(member, len(accepted), content)
        return TaskCreated(
            response.msgid,
            member,
            accepted,
            list(response.fail_list),
            reservation.capped,
            notified,
            notify_error,
        )

    async def _notify(self, member: str, count: int, content: MessageContent) -> tuple[bool, str]:
        """Tell the member a task awaits them. The task exists either way, so a failure is reported,
        not raised."""
        if self.app is None or self.settings.wecom_agent_id is None:
            return False, "未配置 WECOM_AGENT_ID/WECOM_AGENT_SECRET，未通知成员 / app messages not configured"
        preview = content.describe()
        if len(preview) > 200:
            preview = preview[:200] + "…"
        message = (
            f"【客户消息待确认】你有一条发给 {count} 位客户的消息待发送，请在企业微信「客户联系 → 群发助手」"
            f"中确认发送。\n内容：{preview}\n"
            f"A message to {count} customer(s) awaits your confirmation in WeCom (客户联系 → 群发助手)."
        )
        try:
            await self.app.send_app_message(self.settings.wecom_agent_id, member, message)
        except WeComError as exc:
            code = getattr(exc, "errcode", type(exc).__name__)
            return False, f"通知成员失败 / could not notify the member: {code}"
        return True, ""

    # --- tracking ---------------------------------------------------------------------------------

    async def _members(self, msgid: str) -> list[MemberOutcome]:
        """Each member's outcome of a task, from WeCom (get_groupmsg_task, every page)."""
        members: list[MemberOutcome] = []
        cursor: str | None = None
        while True:
            page = await self.contact.get_groupmsg_task(msgid, limit=1000, cursor=cursor)
            members += [MemberOutcome(t.userid, t.status, _when(t.send_time)) for t in page.task_list]
            if not page.next_cursor:
                return members
            cursor = page.next_cursor

    async def status(self, msgid: str) -> TaskStatus:
        """Read a task's per-member and per-customer outcomes from WeCom and update the ledger."""
        members = await self._members(msgid)
        customers: list[CustomerOutcome] = []
        for member in members:
            cursor = None
            while True:
                result = await self.contact.get_groupmsg_send_result(
                    msgid, member.userid, limit=1000, cursor=cursor
                )
                customers += [
                    CustomerOutcome(r.external_userid, r.userid, r.status, _when(r.send_time))
                    for r in result.send_list
                    if r.external_userid
                ]
                if not result.next_cursor:
                    break
                cursor = result.next_cursor
        await self.ledger.record_results(
            msgid, [SendResult(c.external_userid, c.status, c.send_time) for c in customers]
        )
        async with self.database.pool.connection() as conn:
            row = await (await conn.execute(_TASK_CHECKED, (self.clock(), msgid))).fetchone()
        return TaskStatus(msgid, members, customers, bool(row and row[0]))

    async def remind(self, msgid: str) -> int:
        """Remind the member again; refuses locally at 3 per 24 h, and a task every member already
        sent (wecom-api §9: a reminder asks members to complete it). Returns reminders left today."""
        members = await self._members(msgid)
        if members and all(m.status == MEMBER_SENT for m in members):
            raise AlreadySentError(msgid)
        now = self.clock()
        async with self.database.pool.connection() as conn, conn.transaction():
            await conn.execute(_TASK_LOCK, (msgid,))
            cur = await conn.execute(_RECENT_REMINDERS, (msgid, now - REMINDER_WINDOW))
            recent = [r[0] for r in await cur.fetchall()]
            if len(recent) >= REMINDERS_PER_DAY:
                raise ReminderLimitError(msgid, recent[0] + REMINDER_WINDOW, self.settings.contact_timezone)
            try:
                await self.contact.remind_groupmsg_send(msgid)
            except APIError as exc:
                if exc.errcode == ERR_REMIND_LIMIT:
                    raise ReminderLimitError(msgid, None, self.settings.contact_timezone) from exc
                raise
            await conn.execute(_RECORD_REMINDER, (msgid, now))
        return REMINDERS_PER_DAY - len(recent) - 1

    async def cancel(self, msgid: str) -> CancelOutcome:
        """Stop the members of a task who have not sent it yet; their customers stop counting against
        the cap. Refused (`NothingToCancelError`) when every member already sent it.

        wecom-api §9 documents cancel_groupmsg_send only as "停止无需成员继续发送的企业群发", with
        41093 群发任务已取消 as its related error, and says nothing of a task every member already
        sent. UNCONFIRMED what WeCom answers then (ok or an error): that case is refused here before
        WeCom is asked, as `remind` refuses it, so the answer does not matter. Also UNCONFIRMED: that
        cancelling a task already cancelled answers 41093; the simulator answers ok, and 41093 is read
        as "already cancelled" whenever it comes.
        """
        members = await self._members(msgid)
        if members and all(m.status == MEMBER_SENT for m in members):
            raise NothingToCancelError(msgid, len(members))
        try:
            await self.contact.cancel_groupmsg_send(msgid)
        except APIError as exc:
            if exc.errcode != ERR_CANCELLED:
                raise
            await self._cancelled(msgid)  # cancelled at WeCom all the same (elsewhere, or a lost answer)
            raise AlreadyCancelledError(msgid) from exc
        return await self._cancelled(msgid)

    async def _cancelled(self, msgid: str) -> CancelOutcome:
        """Record a cancellation. Outcomes are read first, after the cancel, so that customers a member
        sent to (even just before it) are recorded as sent and only the truly unsent are freed."""
        after = await self.status(msgid)
        freed = await self.ledger.cancel(msgid)
        async with self.database.pool.connection() as conn:
            await conn.execute(_TASK_CANCELLED, (self.clock(), msgid))
        sent = sum(1 for m in after.members if m.status == MEMBER_SENT)
        return CancelOutcome(msgid, len(after.members) - sent, sent, freed)

    async def tasks(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        creator: str | None = None,
        limit: int = 100,
    ) -> list[TaskSummary]:
        """Past tasks from get_groupmsg_list_v2 (newest range first; the range is at most a month)."""
        end = end or self.clock()
        start = start or end - timedelta(days=30)
        if start >= end:
            zone = self.settings.contact_timezone
            raise ContactError(
                f"开始时间须早于结束时间 / the range must start before it ends "
                f"({moment(start, zone)} ≥ {moment(end, zone)})"
            )
        if end - start > timedelta(days=31):
            raise ContactError("查询范围最多 1 个月（wecom-api §9）/ the range is at most one month")
        found: list[TaskSummary] = []
        cursor: str | None = None
        while len(found) < limit:
            page = await self.contact.get_groupmsg_list_v2(
                GetGroupMsgListV2Request(
                    chat_type="single",
                    start_time=int(start.timestamp()),
                    end_time=int(end.timestamp()),
                    creator=creator,
                    limit=100,
                    cursor=cursor,
                )
            )
            msgids = [g.msgid for g in page.group_msg_list]
            async with self.database.pool.connection() as conn:
                cur = await conn.execute(_LOCAL_TASKS, (msgids,))
                local = {r[0] for r in await cur.fetchall()}
            found += [
                TaskSummary(
                    g.msgid,
                    g.creator,
                    datetime.fromtimestamp(g.create_time, UTC),
                    g.create_type,
                    g.text.content if g.text else "",
                    len(g.attachments),
                    g.msgid in local,
                )
                for g in page.group_msg_list
            ]
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        return found[:limit]


def _when(timestamp: int | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


def require_contact_secret(settings: Settings) -> None:
    if settings.wecom_contact_secret is None or not settings.wecom_contact_secret.get_secret_value():
        raise NotConfiguredError(
            "未配置 WECOM_CONTACT_SECRET：企业微信管理后台 → 客户联系 → 客户 → API → Secret（或把自建应用加入"
            "「可调用应用」并填它的 Secret）/ WECOM_CONTACT_SECRET is not set: copy the 客户联系 secret"
        )


@asynccontextmanager
async def open_contact_service(
    settings: Settings, database: Database, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[ContactService]:
    """The service with its two WeCom clients: the 客户联系 secret for externalcontact/*, and the
    self-built app (if configured) for message/send. Each secret has its own token in the shared
    PostgreSQL token cache (wecom-api §7.4: one token per app)."""
    require_contact_secret(settings)
    assert settings.wecom_contact_secret is not None
    store = PostgresTokenStore(database.pool)
    async with WeComClient(
        settings.wecom_api_base,
        settings.wecom_corp_id,
        settings.wecom_contact_secret,
        token_store=store,
        transport=transport,
    ) as contact:
        app: WeComClient | None = None
        if settings.wecom_agent_secret is not None and settings.wecom_agent_secret.get_secret_value():
            app = WeComClient(
                settings.wecom_api_base,
                settings.wecom_corp_id,
                settings.wecom_agent_secret,
                token_store=store,
                transport=transport,
            )
        try:
            yield ContactService(settings, database, contact, app)
        finally:
            if app is not None:
                await app.aclose()
