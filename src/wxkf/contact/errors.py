"""Errors of customer contact (客户联系). Messages are Chinese first with English beside them.

    ContactError                    anything the contact service refuses or cannot do
    ├── NotConfiguredError              WECOM_CONTACT_SECRET (or the app secret) is missing
    ├── InvalidMessageError             the message breaks a wecom-api §9 limit (bytes, attachments, …)
    ├── ReceiveCapError                 every requested customer is at the receive cap (`capped`)
    ├── ReminderLimitError              3 reminders in 24 h already (`next_at`)
    ├── AlreadySentError                every member already sent the task: nothing to remind
    ├── NothingToCancelError            every member already sent the task: nothing to cancel
    ├── AlreadyCancelledError           WeCom says the task was already cancelled (41093)
    └── ConfirmationError               a confirmation token is unknown, expired, used or not yours

Other WeCom errors arrive as `wxkf.wecom.errors.APIError` and are passed through unchanged.

Every time a message shows goes through `moment`: in CONTACT_TIMEZONE, with the zone's abbreviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from wxkf.clock import local_time

MOMENT_FORMAT = "%Y-%m-%d %H:%M %Z"  # e.g. 2026-12-04 21:46 CST


def moment(value: datetime, zone: str) -> str:
    """How the contact CLI and its messages show a time: in `zone` (CONTACT_TIMEZONE), labelled."""
    return local_time(value, zone, MOMENT_FORMAT)


class ContactError(Exception):
    """The contact service refused the request; the message says why and what to do."""


class NotConfiguredError(ContactError):
    pass


class InvalidMessageError(ContactError):
    pass


@dataclass(frozen=True)
class CappedCustomer:
    """A customer who already received the configured number of messages in this period."""

    external_userid: str
    received: int
    next_at: datetime  # the start of the next period, when they can receive again
    zone: str  # CONTACT_TIMEZONE, in which the period is counted and shown

    def describe(self) -> str:
        when = moment(self.next_at, self.zone)
        return (
            f"客户 {self.external_userid} 本周期已接收 {self.received} 条，{when} 起可再接收 / "
            f"customer {self.external_userid} already received {self.received} in this period; "
            f"can receive again from {when}"
        )


class ReceiveCapError(ContactError):
    def __init__(self, capped: list[CappedCustomer], rule: str) -> None:
        self.capped = capped
        self.rule = rule
        lines = "\n".join(f"  - {c.describe()}" for c in capped[:20])
        more = f"\n  … 另有 {len(capped) - 20} 位 / {len(capped) - 20} more" if len(capped) > 20 else ""
        super().__init__(
            f"超过客户接收上限（{rule}，wecom-api §9），未创建群发任务 / receive cap reached, no task "
            f"created:\n{lines}{more}"
        )


class ReminderLimitError(ContactError):
    def __init__(self, msgid: str, next_at: datetime | None, zone: str) -> None:
        self.msgid = msgid
        self.next_at = next_at
        shown = moment(next_at, zone) if next_at else ""
        when = f"，{shown} 后可再提醒" if next_at else ""
        when_en = f"; next reminder possible after {shown}" if next_at else ""
        super().__init__(
            f"群发任务 {msgid} 24 小时内已提醒 3 次{when} / task {msgid} was already reminded 3 times "
            f"in 24 h{when_en}"
        )


class AlreadySentError(ContactError):
    def __init__(self, msgid: str) -> None:
        self.msgid = msgid
        super().__init__(
            f"群发任务 {msgid} 已由成员全部发送，无需提醒 / every member already sent task {msgid}: "
            "there is nothing to remind"
        )


class NothingToCancelError(ContactError):
    """Every member already sent the task: their customers received it, and nothing is left to stop."""

    def __init__(self, msgid: str, members: int) -> None:
        self.msgid = msgid
        self.members = members
        who_zh = "成员已发送" if members == 1 else f"全部 {members} 位成员均已发送"
        who_en = (
            "the member has already sent it" if members == 1 else f"all {members} members already sent it"
        )
        super().__init__(
            f"群发任务 {msgid} {who_zh}，无法取消（客户已收到）/ task {msgid}: {who_en}: nothing to cancel "
            "(the customers received it)"
        )


class AlreadyCancelledError(ContactError):
    def __init__(self, msgid: str) -> None:
        self.msgid = msgid
        super().__init__(
            f"群发任务 {msgid} 已取消过（企业微信 41093）/ task {msgid} was already cancelled (WeCom 41093)"
        )


class ConfirmationError(ContactError):
    pass
