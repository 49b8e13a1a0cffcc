"""Session-state policy (wecom-api §6): may the bot answer this customer now?

send_msg only works while the session is 0 (未处理) or 1 (由智能助手接待) (wecom-api §4); anything
else answers 95018. So the pipeline reads service_state first and decides:

    0 / 1  → send
    2      → don't send: the customer is queued for a human
    3      → `respect` (default): a human is serving, record it and stay quiet
             `end`: trans → 4 with the current servicer (auto-end), then wait for the
                    customer's next message, which opens a new session in state 0
    4      → don't send: the session is over until the customer writes again
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

SessionPolicyName = Literal["respect", "end"]

STATE_NAMES = {
    0: "未处理 / new",
    1: "由智能助手接待 / bot",
    2: "待接入池排队中 / queued for a human",
    3: "由人工接待 / human serving",
    4: "已结束 / ended",
}
SENDABLE_STATES = frozenset({0, 1})  # wecom-api §4


class Action(StrEnum):
    SEND = "send"
    SKIP = "skip"
    END_SESSION = "end_session"


class Reason(StrEnum):
    """Why a customer message was not answered; stored in `kf_inbound.reason` and counted."""

    HISTORY = "history"
    SERVICER_REPLIED = "servicer_replied"
    PAUSED = "paused"
    QUEUED_FOR_HUMAN = "queued_for_human"
    HUMAN_SERVING = "human_serving"
    ENDED_FOR_NEW_SESSION = "ended_for_new_session"
    SESSION_ENDED = "session_ended"
    BUDGET_USED_UP = "budget_used_up"
    NO_REPLY = "no_reply"
    SEND_REFUSED = "send_refused"

    @property
    def explain(self) -> str:
        return _EXPLAIN[self]


_EXPLAIN = {
    Reason.HISTORY: "首次同步跳过的历史消息 / history older than KF_HISTORY_MAX_AGE_MINUTES at first sync",
    Reason.SERVICER_REPLIED: "接待人员已回复该客户 / a servicer answered this customer",
    Reason.PAUSED: "接待人员刚发过消息，机器人暂停 / bot paused because a servicer wrote recently",
    Reason.QUEUED_FOR_HUMAN: "会话在待接入池排队（state=2），不发送 / queued for a human (state 2)",
    Reason.HUMAN_SERVING: "人工接待中（state=3，KF_SESSION_POLICY=respect），不发送 / a human is serving (state 3)",
    Reason.ENDED_FOR_NEW_SESSION: (
        "人工接待中，已结束会话（state 3→4，KF_SESSION_POLICY=end），等客户再次发消息 / "
        "ended the human session; waiting for the customer's next message"
    ),
    Reason.SESSION_ENDED: "会话已结束（state=4），等客户再次发消息 / session ended (state 4)",
    Reason.BUDGET_USED_UP: (
        "48 小时内 5 条回复额度已用完，等客户再次发消息 / the 5-message budget is used up until the customer writes"
    ),
    Reason.NO_REPLY: "应答器选择不回复 / the responder chose not to answer",
    Reason.SEND_REFUSED: "企业微信拒绝发送 / WeCom refused the send",
}


def decide(state: int, policy: SessionPolicyName) -> tuple[Action, Reason | None]:
    """What to do for a session in `state` under `policy` (pure; see the module docstring)."""
    if state in SENDABLE_STATES:
        return Action.SEND, None
    if state == 2:
        return Action.SKIP, Reason.QUEUED_FOR_HUMAN
    if state == 3:
        if policy == "end":
            return Action.END_SESSION, Reason.ENDED_FOR_NEW_SESSION
        return Action.SKIP, Reason.HUMAN_SERVING
    return Action.SKIP, Reason.SESSION_ENDED


def state_name(state: int | None) -> str:
    return STATE_NAMES.get(state, f"未知 / unknown ({state})") if state is not None else "未知 / unknown"
