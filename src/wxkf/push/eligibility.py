"""May a push go to this customer now, later, or not in this window? A pure decision (docs/push.md).

Checked in this order inside the transaction that holds the conversation's budget row (so a reply
and a push can never both take the same message):

    push turned off (退订)                → drop   disabled
    outside the 48 h window               → drop   window_closed            (wecom-api §4)
    no message left                       → drop   budget_used_up           (wecom-api §4)
    only the kept message(s) left         → drop   last_message_kept        (PUSH_KEEP_FOR_REPLIES)
    session not 0/1 (human, ended)        → drop   session_not_sendable     (wecom-api §4, §6)
    servicer wrote a moment ago           → wait   paused                   until the pause ends
    quiet hours (customer's time zone)    → wait   quiet_hours              until they end
    daily limit reached                   → wait   daily_limit              until local midnight
    every match at its intent's limit     → wait   intent_daily_limit       until local midnight
    digest mode                           → wait   digest                   until the digest hour
    a wait that outlasts the window       → drop   window_closes_first

A dropped push leaves its matches pending when the reason can pass (the customer writes again, a
new day): the next push or digest takes them. `disabled` is final until the customer subscribes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from wxkf.kf.budget import WINDOW, BudgetState
from wxkf.kf.policy import SENDABLE_STATES, state_name
from wxkf.push.quiet import QuietHours, local_midnight_after, next_local_hour

SEND_MARGIN = timedelta(minutes=2)  # a wait must end this long before the window closes


class Action(StrEnum):
    SEND = "send"
    WAIT = "wait"
    DROP = "drop"


class Reason(StrEnum):
    """Why a push was not sent (now); stored in `push_history.reason` and `push_matches.reason`."""

    DISABLED = "disabled"
    WINDOW_CLOSED = "window_closed"
    BUDGET_USED_UP = "budget_used_up"
    LAST_MESSAGE_KEPT = "last_message_kept"
    SESSION_NOT_SENDABLE = "session_not_sendable"
    PAUSED = "paused"
    QUIET_HOURS = "quiet_hours"
    DAILY_LIMIT = "daily_limit"
    INTENT_DAILY_LIMIT = "intent_daily_limit"
    DIGEST = "digest"
    WINDOW_CLOSES_FIRST = "window_closes_first"
    BELOW_MIN_SCORE = "below_min_score"
    ALREADY_PUSHED = "already_pushed"
    INTENT_INACTIVE = "intent_inactive"
    WECOM_ERROR = "wecom_error"

    @property
    def explain(self) -> str:
        return _EXPLAIN[self]

    @property
    def final(self) -> bool:
        """Final reasons retire the match; the others leave it pending for a later push."""
        return self in _FINAL


_EXPLAIN = {
    Reason.DISABLED: "客户已关闭推送（退订）/ the customer turned pushes off",
    Reason.WINDOW_CLOSED: "客户 48 小时内未发消息，企业微信不允许发送 / outside WeCom's 48 h window",
    Reason.BUDGET_USED_UP: "本窗口的 5 条消息额度已用完 / the window's 5 messages are used up",
    Reason.LAST_MESSAGE_KEPT: (
        "窗口只剩最后的额度，留给回答客户的提问（PUSH_KEEP_FOR_REPLIES）/ only the window's last "
        "message is left, kept for answering the customer"
    ),
    Reason.SESSION_NOT_SENDABLE: "会话由人工接待、排队或已结束，不能发送 / the session is not the bot's (state 2/3/4)",
    Reason.PAUSED: "接待人员刚发过消息，稍后再推送 / a servicer wrote recently: pushed after the pause",
    Reason.QUIET_HOURS: "客户的静默时段，结束后推送 / the customer's quiet hours: pushed when they end",
    Reason.DAILY_LIMIT: "已达客户的每日推送上限，次日推送 / the customer's daily limit: pushed tomorrow",
    Reason.INTENT_DAILY_LIMIT: "已达该意图的每日推送上限，次日推送 / the intent's daily limit: pushed tomorrow",
    Reason.DIGEST: "客户选择每日汇总，在汇总时间推送 / the customer wants a daily digest",
    Reason.WINDOW_CLOSES_FIRST: (
        "可以推送之前 48 小时窗口就会关闭 / the 48 h window closes before the push could go"
    ),
    Reason.BELOW_MIN_SCORE: "匹配度低于客户设置的最低分 / the score is below the customer's minimum",
    Reason.ALREADY_PUSHED: "这个资料已为该意图推送过 / this profile was already pushed for this intent",
    Reason.INTENT_INACTIVE: "意图已取消或过期 / the intent was cancelled or has expired",
    Reason.WECOM_ERROR: "读取会话状态失败，稍后重试 / reading the session state failed: retried later",
}
_FINAL = frozenset({Reason.DISABLED, Reason.BELOW_MIN_SCORE, Reason.ALREADY_PUSHED, Reason.INTENT_INACTIVE})

# The reasons a match carries that are not delivery decisions: set by matching (the LLM re-check)
# and by a change to its intent or profile (the match is retired; a new version is scored anew).
MATCH_REASONS = {
    "llm_rejected": "大模型复核认为不匹配 / the LLM re-check said it does not match",
    "llm_lowered": "大模型复核后匹配度低于阈值 / below the threshold after the LLM re-check",
    "llm_unparseable": "大模型的复核答复无法读取，按不匹配处理 / the LLM's answer could not be read: no match",
    "intent_changed": "意图已修改，按新版本重新匹配 / the intent changed: matched again as its new version",
    "intent_cancelled": "意图已取消 / the intent was cancelled",
    "intent_paused": "意图已暂停 / the intent is paused",
    "intent_draft": "意图尚未确认 / the intent is not confirmed yet",
    "profile_changed": "资料已修改，按新版本重新匹配 / the profile changed: matched again as its new version",
    "profile_deleted": "资料已删除 / the profile was deleted",
}


def explain(reason: str | None) -> str:
    """A stored reason (a match's or a history row's) in words, Chinese first; an unknown one as stored."""
    if reason is None:
        return ""
    known = {r.value: r for r in Reason}
    if reason in known:
        return known[reason].explain
    return MATCH_REASONS.get(reason, reason)


@dataclass(frozen=True)
class Situation:
    """Everything the decision reads, gathered by `wxkf.push.delivery` under the budget's row lock."""

    now: datetime
    enabled: bool
    budget: BudgetState
    keep_for_replies: int
    session_state: int | None  # None: not known (treated as sendable: WeCom then refuses, recorded)
    paused_until: datetime | None
    quiet: QuietHours | None
    zone: ZoneInfo
    sent_today: int
    daily_limit: int
    only_tomorrow: bool = False  # every pending match is at its intent's daily limit
    digest_hour: int | None = None
    digest_mode: bool = False
    digest_run: bool = False  # this delivery is the digest itself


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: Reason | None = None
    until: datetime | None = None  # WAIT: when to try again
    detail: str = ""


def decide(s: Situation) -> Decision:
    """What to do with a push (pure; see the module docstring for the order)."""
    if not s.enabled:
        return Decision(Action.DROP, Reason.DISABLED)
    remaining = s.budget.remaining(s.now)
    if s.budget.window_started_at is None or s.now >= s.budget.window_started_at + WINDOW:
        return Decision(Action.DROP, Reason.WINDOW_CLOSED)
    if remaining < 1:
        return Decision(Action.DROP, Reason.BUDGET_USED_UP)
    if remaining <= s.keep_for_replies:
        return Decision(Action.DROP, Reason.LAST_MESSAGE_KEPT, detail=f"remaining={remaining}")
    if s.session_state is not None and s.session_state not in SENDABLE_STATES:
        return Decision(Action.DROP, Reason.SESSION_NOT_SENDABLE, detail=state_name(s.session_state))
    window_end = s.budget.window_started_at + WINDOW
    at, reason = _earliest(s)
    if reason is None:
        return Decision(Action.SEND)
    if at > window_end - SEND_MARGIN:
        return Decision(
            Action.DROP, Reason.WINDOW_CLOSES_FIRST, detail=f"{reason.value} until {at:%Y-%m-%d %H:%M}Z"
        )
    return Decision(Action.WAIT, reason, at)


def _earliest(s: Situation) -> tuple[datetime, Reason | None]:
    """The first moment every wait has passed, and the reason of the first wait met."""
    today_ends = local_midnight_after(s.now, s.zone)
    at = s.now
    first: Reason | None = None
    for _ in range(8):  # each step moves forward; a few rounds settle pause → digest → quiet → midnight
        step: tuple[datetime, Reason] | None = None
        if s.paused_until is not None and at < s.paused_until:
            step = (s.paused_until, Reason.PAUSED)
        elif s.digest_mode and not s.digest_run and s.digest_hour is not None and first is None:
            step = (next_local_hour(at, s.zone, s.digest_hour), Reason.DIGEST)
        elif s.quiet is not None and (end := s.quiet.ends_after(at, s.zone)) is not None:
            step = (end, Reason.QUIET_HOURS)
        elif at < today_ends and s.sent_today >= s.daily_limit:
            step = (today_ends, Reason.DAILY_LIMIT)
        elif at < today_ends and s.only_tomorrow:
            step = (today_ends, Reason.INTENT_DAILY_LIMIT)
        if step is None:
            return at, first
        at, reason = step
        first = first or reason
    return at, first
