"""The simulator's tunable behaviour: WeCom's numbers, and the choices the spec leaves open.

Every field where the spec says UNCONFIRMED names the choice made and why; change any of them at run
time with `PATCH /sim/behaviour` (or `SimulatorControl.set_behaviour`).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class RoutingMode(StrEnum):
    """接待方式 of a kf account: decides a new session's first state when the customer writes.

    wecom-api §6 says a customer message moves state 4 to 0 (未处理); the admin console's 接待方式
    decides what happens next. `api` is the account "通过API管理" with no automatic
    assignment — the spec's own model (§11.1).
    """

    API = "api"  # 通过API管理 → 0 未处理
    AI_ONLY = "ai_only"  # 仅智能助手接待 → 1 由智能助手接待
    AI_FIRST = "ai_first"  # 智能助手接待优先 → 1 由智能助手接待
    HUMAN_FIRST = "human_first"  # 人工接待优先 → 3 with an active servicer, else 2 (待接入池)
    HUMAN_ONLY = "human_only"  # 仅人工接待 → 3 with an active servicer, else 2 (待接入池)


def first_state(mode: RoutingMode, has_active_servicer: bool) -> int:
    """The state a session in state 4 enters when the customer writes (the admin console's table)."""
    if mode is RoutingMode.API:
        return 0
    if mode in (RoutingMode.AI_ONLY, RoutingMode.AI_FIRST):
        return 1
    return 3 if has_active_servicer else 2


# wecom-api §6: third-party transcription of the official flowchart. The self-loops and the
# 0/1/2 → 4 edges are UNCONFIRMED; they are allowed by default and configurable here.
DEFAULT_TRANSITIONS: dict[int, list[int]] = {0: [1, 2, 3, 4], 1: [1, 2, 3, 4], 2: [2, 3, 4], 3: [3, 4], 4: []}


class Behaviour(BaseModel):
    """All knobs. Durations are in seconds of the simulated clock."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # wecom-api §7.4: tokens live 7200 s; the same token is returned until it expires.
    access_token_ttl: int = Field(7200, ge=1)
    # wecom-api §2: the callback Token is valid for 10 minutes.
    callback_token_ttl: int = Field(600, ge=1)
    # wecom-api §5: welcome and end codes live 20 s; pool/servicer reply codes 48 h.
    welcome_code_ttl: int = Field(20, ge=1)
    end_code_ttl: int = Field(20, ge=1)
    reply_code_ttl: int = Field(48 * 3600, ge=1)
    # wecom-api §4: 5 messages within 48 h of the customer's last message.
    send_window: int = Field(48 * 3600, ge=1)
    send_budget: int = Field(5, ge=0)
    # wecom-api §4: which errcode a send outside the 48 h window gets is UNCONFIRMED; 95018's
    # official description covers it ("或者会话已经超过48小时"), so 95018 is the default; 95002 optional.
    window_errcode: int = Field(95018)
    text_max_bytes: int = Field(2048, ge=1)
    # wecom-api §4: miniprogram title ≤ 64 bytes, longer titles are cut (截断).
    miniprogram_title_max_bytes: int = Field(64, ge=1)
    menu_max_items: int = Field(10, ge=1)
    # wecom-api §4: msgid duplicate errcode is UNCONFIRMED; 40058 (invalid param) is used.
    duplicate_msgid_errcode: int = 40058
    # wecom-api §5: the errcode for an unknown, used or expired event code is UNCONFIRMED; 95007
    # (不合法的msgtoken, "可能为失效或者非法") is the closest official description.
    bad_event_code_errcode: int = 95007
    # wecom-api §4: "接口返回成功，不代表消息最终发送成功" — a successful send may later fail.
    msg_send_fail_rate: float = Field(0.0, ge=0.0, le=1.0)
    msg_send_fail_type: int = 0
    # wecom-api §3: "可能会出现has_more为1，而msg_list为空的情况" — probability per page while
    # messages remain (so a client that follows has_more still terminates).
    empty_page_rate: float = Field(0.0, ge=0.0, le=1.0)
    sync_horizon: int = Field(3 * 86400, ge=1)
    sync_max_limit: int = Field(1000, ge=1)
    # wecom-api §3: sync_msg without token "有严格的频率限制" — no number published (UNCONFIRMED).
    # None = no limit; a number = calls per 60 s per account before 45009.
    tokenless_sync_per_minute: int | None = None
    transitions: dict[int, list[int]] = Field(default_factory=lambda: dict(DEFAULT_TRANSITIONS))
    # wecom-api §1.7: 5 s timeout, 3 retries. Older text retries any non-200; the newer wording only
    # network failures and timeouts — the older (stricter for receivers) is the default.
    callback_timeout: float = Field(5.0, gt=0)
    callback_retries: int = Field(3, ge=0)
    callback_retry_delay: float = Field(1.0, ge=0)
    # The wait grows by this factor after each retry (UNCONFIRMED: WeCom publishes no schedule).
    callback_retry_backoff: float = Field(1.0, ge=1.0)
    callback_retry_on_non_200: bool = True
    # wecom-api §1.4: the URL verification must be answered within 1 second.
    url_verify_timeout: float = Field(1.0, gt=0)
    # wecom-api §9: receive cap per customer; the current text allows days-in-month per month, 7 per
    # week or 1 per day. Default: 1 per rolling 24 h (the strictest published setting).
    groupmsg_cap: int = Field(1, ge=1)
    groupmsg_cap_period: int = Field(86400, ge=1)
    # wecom-api §9: at most 3 reminders per 24 h per group message (41094).
    remind_limit: int = Field(3, ge=1)
    # wecom-api §3: open_kfid is required since the 2024/01/31 revision; older ones returned every
    # account's messages without it. False serves the older behaviour.
    sync_msg_requires_open_kfid: bool = True
    # What WeCom answers for a /cgi-bin path it does not know: HTTP 200 with an errcode (§7.3), never
    # a 404. Which errcode is UNCONFIRMED; 48001 (API功能未授权) is what the WeChat APIs answer.
    unknown_api_errcode: int = 48001
    # wecom-api §8: media_id is valid for three days.
    media_ttl: int = Field(3 * 86400, ge=1)
    # Bound on the in-memory call / callback-attempt logs.
    log_capacity: int = Field(200_000, ge=100)
