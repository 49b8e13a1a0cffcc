"""The error catalog: what went wrong and what to click, in Chinese and English.

Two sources meet here:

* the official errcode table (`data/wecom-errcodes.tsv`, a copy of WeCom's doc 90313), which gives every
  errcode its official Chinese description; and
* hand-written `CatalogEntry`s with cause and fix for the codes operators actually meet, for the
  callback-crypto failures (the sample library's -400xx codes, spec §1.8) and for situations that have
  no errcode at all (pgvector missing, an LLM key rejected, …), each under a stable key.

`entry_for` finds an entry by errcode or key, `hint_for` turns an errcode into the one-paragraph hint
that `errors.error_for_errcode` attaches to every `APIError`, and `docs/troubleshooting.md` is rendered
from `ENTRIES` by `wxkf.ops.troubleshooting` — so the guide, `wxkf explain` and the errors never
disagree. Every entry's `doc_anchor` is the guide's section for it.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from wxkf.wecom.errors import reported_ip

GUIDE_PATH = "docs/troubleshooting.md"

Section = Literal[
    "session", "credentials", "rate", "request", "callback", "network", "database", "llm", "app"
]

# The guide's chapters, in the order an operator meets the problems.
SECTIONS: dict[Section, tuple[str, str]] = {
    "session": ("会话与发送", "Sessions and sending"),
    "credentials": ("凭证、权限与企业可信IP", "Credentials, permissions and trusted IP"),
    "rate": ("频率限制与系统繁忙", "Rate limits and busy servers"),
    "request": ("请求参数与客户联系", "Request parameters and customer contact"),
    "callback": ("回调与加解密", "Callbacks and callback crypto"),
    "network": ("网络", "Network"),
    "database": ("数据库", "Database"),
    "llm": ("AI 引擎", "AI engine (LLM)"),
    "app": ("应用", "Application"),
}


@dataclass(frozen=True)
class OfficialCode:
    """One row of WeCom's official errcode table (doc 90313)."""

    errcode: int
    description_zh: str
    check_zh: str  # the table's 排查方法 column, first line; "" when the table only links to help

    @property
    def query_url(self) -> str:
        """WeCom's own errcode lookup page (the `more info at` link in every errmsg)."""
        return f"https://open.work.weixin.qq.com/devtool/query?e={self.errcode}"


@dataclass(frozen=True)
class CatalogEntry:
    """Cause and fix for one errcode or situation. `fix_*` are steps, in the order to try them."""

    key: str
    errcode: int | None
    title_zh: str
    title_en: str
    cause_zh: str
    cause_en: str
    fix_zh: tuple[str, ...]
    fix_en: tuple[str, ...]
    doc_anchor: str
    section: Section
    hint_steps: int = 1  # how many fix steps the one-paragraph hint carries

    @property
    def guide_link(self) -> str:
        return f"{GUIDE_PATH}#{self.doc_anchor}"

    @property
    def official(self) -> OfficialCode | None:
        """The official table's row for this errcode (API errcodes only; -400xx are library codes)."""
        return official_codes().get(self.errcode) if self.errcode is not None else None


def errcode_anchor(errcode: int) -> str:
    """The guide anchor for an errcode: `errcode-95018`, `errcode-minus-40001`."""
    return f"errcode-{errcode}" if errcode >= 0 else f"errcode-minus-{-errcode}"


@functools.cache
def official_codes() -> dict[int, OfficialCode]:
    """The official errcode table, packaged beside this module."""
    text = resources.files("wxkf.wecom").joinpath("data/wecom-errcodes.tsv").read_text(encoding="utf-8")
    rows = (line for line in io.StringIO(text) if line.strip() and not line.startswith("#"))
    codes: dict[int, OfficialCode] = {}
    for row in csv.DictReader(rows, delimiter="\t"):
        check = row["排查方法(first line)"].strip()
        # "[查看帮助]" and "-" are links or blanks in the original page, not advice.
        if check in {"-", "[查看帮助]"}:
            check = ""
        code = int(row["errcode"])
        codes[code] = OfficialCode(code, row["错误说明"].strip(), check)
    return codes


def _errcode(
    errcode: int,
    section: Section,
    title_en: str,
    cause_zh: str,
    cause_en: str,
    fix_zh: tuple[str, ...],
    fix_en: tuple[str, ...],
    title_zh: str = "",
    hint_steps: int = 1,
) -> CatalogEntry:
    """An errcode entry; the Chinese title defaults to the official description."""
    if not title_zh:
        title_zh = official_codes()[errcode].description_zh
    return CatalogEntry(
        str(errcode),
        errcode,
        title_zh,
        title_en,
        cause_zh,
        cause_en,
        fix_zh,
        fix_en,
        errcode_anchor(errcode),
        section,
        hint_steps,
    )


def _situation(
    key: str,
    section: Section,
    title_zh: str,
    title_en: str,
    cause_zh: str,
    cause_en: str,
    fix_zh: tuple[str, ...],
    fix_en: tuple[str, ...],
) -> CatalogEntry:
    return CatalogEntry(key, None, title_zh, title_en, cause_zh, cause_en, fix_zh, fix_en, key, section)


_RECEPTION_PATH_ZH = "企业微信管理后台 → 应用管理 → 微信客服 → 接待设置"

ENTRIES: tuple[CatalogEntry, ...] = (
    # -- sessions and sending: wecom-api §4 (5 messages / 48 h), §6 (session states) ----------
    _errcode(
        95018,
        "session",
        "The session's state does not allow sending",
        "send_msg 只能在会话状态为 0（未处理）或 1（由智能助手接待）时调用。会话处于 2（待接入池排队中）、"
        "3（由人工接待）或 4（已结束/未开始），或距客户最后一条消息已超过 48 小时，企业微信就返回 95018。"
        "最常见的原因是「接待设置」选了人工接待相关的模式，新会话一进来就分配给接待人员（state=3）。",
        "send_msg works only while the session is in state 0 (new) or 1 (handled by the smart assistant). "
        "In state 2 (queued for staff), 3 (handled by staff) or 4 (ended / not started), or more than 48 h after "
        "the customer's last message, WeCom answers 95018. Most often the reception settings (接待设置) route "
        "new sessions to a human, so they start in state 3.",
        (
            f"{_RECEPTION_PATH_ZH}：接待方式选「仅智能助手接待」（新会话都进入 state=1），或「智能助手接待优先」"
            "（先由 API 回复，需要时再转人工）；不要选「人工接待优先」「仅人工接待」或自动分配给接待人员。",
            "修改只对新会话生效：已有会话保持原来的状态，客户需要发起新会话（会话结束后再发消息）才会进入 state=1。",
            "让 wxkf 处理卡在人工状态的旧会话：设置 KF_SESSION_POLICY=end（wxkf 结束该会话，客户下次发消息即是新会话），"
            "或用 `wxkf session end` 手动结束指定会话。",
            "超过 48 小时的会话无法再用 API 回复，只能等客户再次发消息。",
        ),
        (
            "In 接待设置 (reception settings, 应用管理 → 微信客服) choose 「仅智能助手接待」 (smart assistant only: "
            "every new session starts in state 1) or 「智能助手接待优先」 (assistant first, hand over to staff when "
            "needed); not 「人工接待优先」, 「仅人工接待」 or automatic assignment to staff.",
            "The change applies to new sessions only: existing sessions keep their state, so the customer must "
            "start a new session (send again after the old one ends) to reach state 1.",
            "To let wxkf deal with old sessions stuck with staff, set KF_SESSION_POLICY=end (wxkf ends the session; "
            "the customer's next message opens a new one), or end one by hand with `wxkf session end`.",
            "A session past 48 h cannot be answered by the API; wait for the customer to write again.",
        ),
        # Operators change the setting and still see 95018 on old sessions: the hint says why.
        hint_steps=2,
    ),
    _errcode(
        95001,
        "session",
        "Send count limit reached",
        "客户每主动发一条消息，企业最多可通过 API 回复 5 条；用完后要等客户再次发消息。",
        "After each message from the customer a company may send at most 5 messages through the API; "
        "the budget returns when the customer writes again.",
        (
            "把回复写完整，少拆成多条；wxkf 的回复预算会在用完前停下并在日志中记录 budget used up。",
            "等客户再次发消息后预算恢复；需要主动联系客户时改用客户联系（群发）。",
        ),
        (
            "Answer in fewer, complete messages; wxkf's reply budget stops before the limit and logs "
            "'budget used up'.",
            "The budget returns when the customer writes again; to reach out first, use customer contact "
            "(group messages).",
        ),
    ),
    _errcode(
        95002,
        "session",
        "Send time limit (48 h) passed",
        "客户最后一次主动发消息已超过 48 小时，API 不能再给该客户发消息。",
        "More than 48 h have passed since the customer's last message; the API can no longer write to them.",
        (
            "等客户再次发消息后再回复；不要重试。",
            "需要主动触达客户时，使用客户联系的群发（add_msg_template）或由员工在企业微信中联系。",
        ),
        (
            "Wait for the customer to write again; do not retry.",
            "To reach the customer first, use a customer-contact group message (add_msg_template) or have "
            "staff contact them in WeCom.",
        ),
    ),
    _errcode(
        95007,
        "session",
        "Invalid or expired msg token",
        "sync_msg 的 token 来自回调事件，只在 10 分钟内有效；过期、用错客服账号或伪造的 token 会被拒绝。",
        "The sync_msg token comes from the callback event and is valid for 10 minutes; an expired token, one "
        "from another kf account, or a made-up one is refused.",
        (
            "收到回调后立即拉取消息，不要缓存旧 token；wxkf 在回调后马上排队同步。",
            "若同步任务积压超过 10 分钟，检查任务 worker 是否在运行（`GET /ready`）。",
        ),
        (
            "Pull messages right after the callback and never reuse an old token; wxkf queues the sync at once.",
            "If sync jobs lag by more than 10 minutes, check that the job workers run (`GET /ready`).",
        ),
    ),
    _errcode(
        95013,
        "session",
        "The session has ended",
        "会话已结束（状态 4），不能再对它转接或用 API 发消息。",
        "The session has ended (state 4); it can no longer be transferred or written to by the API.",
        (
            "等客户再次发消息：新会话从状态 0 开始，wxkf 会正常回复。",
            "不要对已结束的会话调用 service_state/trans。",
        ),
        (
            "Wait for the customer to write again: the new session starts in state 0 and wxkf answers it.",
            "Do not call service_state/trans on an ended session.",
        ),
    ),
    _errcode(
        95014,
        "session",
        "The user is not a servicer",
        "servicer_userid 指定的成员不是该客服账号的接待人员，或未在企业微信激活。",
        "The servicer_userid is not a servicer (接待人员) of this kf account, or has not activated WeCom.",
        (
            "检查 servicer_userid 是否拼写正确（企业微信的 userid，不是姓名）。",
            "管理后台 → 应用管理 → 微信客服 → 客服账号 → 接待人员：把该成员加为接待人员。",
            "确认该成员已登录并激活企业微信。",
        ),
        (
            "Check the servicer_userid (the WeCom userid, not the display name).",
            "Add the member as a servicer: 应用管理 → 微信客服 → 客服账号 → 接待人员.",
            "Make sure the member has activated and logged in to WeCom.",
        ),
    ),
    _errcode(
        95016,
        "session",
        "State transition not allowed",
        "会话状态只能按规定流转：0→1/2/3/4，1→1/2/3/4，2→2/3/4，3→3/4，状态 4 不能由 API 变更；"
        "例如人工接待（3）无法转回智能助手（1）。",
        "Session states move only along 0→1/2/3/4, 1→1/2/3/4, 2→2/3/4, 3→3/4, and state 4 cannot be changed "
        "by the API; for example a session with staff (3) cannot go back to the assistant (1).",
        (
            "先用 service_state/get 查看当前状态，再决定目标状态。",
            "想让新会话由 API 接待，改接待设置（见 95018），不要试图把状态 3 转回 1。",
        ),
        (
            "Read the current state with service_state/get before choosing the target state.",
            "To have new sessions handled by the API, change the reception settings (see 95018) instead of "
            "moving state 3 back to 1.",
        ),
    ),
    _errcode(
        95019,
        "session",
        "The servicer has stopped or paused receiving",
        "指定的接待人员已停止接待或暂时挂起，不能再分配会话给他。",
        "The servicer has stopped receiving or is paused, so sessions cannot be assigned to them.",
        (
            "请接待人员在企业微信中把状态改回「正在接待」，或换一位接待人员。",
            "用 kf/servicer/list 查看接待人员的状态。",
        ),
        (
            "Ask the servicer to switch back to receiving in WeCom, or choose another servicer.",
            "kf/servicer/list shows each servicer's status.",
        ),
    ),
    _errcode(
        95000,
        "session",
        "Invalid open_kfid",
        "open_kfid 格式不对（应为 wk 开头的客服账号 ID），常见于把客服名称或链接填成了 ID。",
        "The open_kfid is malformed (it starts with 'wk'); often the account name or link was used instead.",
        ("用微信客服 secret 调 kf/account/list 获取正确的 open_kfid，或运行 `wxkf doctor` 查看可用账号。",),
        (
            "List the accounts with kf/account/list (kf secret) or run `wxkf doctor` to see the valid open_kfid.",
        ),
    ),
    _errcode(
        95004,
        "session",
        "open_kfid does not exist",
        "客服账号不存在：属于别的企业（跨企业使用），或已被删除。",
        "The kf account does not exist: it belongs to another corp or has been deleted.",
        (
            "确认 open_kfid 属于 WECOM_CORP_ID 对应的企业，且账号未删除。",
            "用 `wxkf doctor` 或 kf/account/list 查看本企业的客服账号。",
        ),
        (
            "Make sure the open_kfid belongs to the corp in WECOM_CORP_ID and has not been deleted.",
            "`wxkf doctor` or kf/account/list shows this corp's kf accounts.",
        ),
    ),
    # -- credentials, permissions and trusted IP: wecom-api §7.2, §7.4 ----------------------
    _errcode(
        40001,
        "credentials",
        "Invalid secret",
        "secret 错误、已重置，或与 WECOM_CORP_ID 不是同一个企业的。每个功能用自己的 secret。"
        "同一 IP 多次用错 secret 获取 token 会被封禁一小时。",
        "The secret is wrong, was reset, or belongs to another corp than WECOM_CORP_ID. Each feature has its "
        "own secret. Many gettoken calls with a wrong secret get the IP blocked for an hour.",
        (
            "WECOM_KF_SECRET：管理后台 → 应用管理 → 微信客服 → API → Secret；"
            "WECOM_CONTACT_SECRET：客户与上下游 → 客户联系 → API → Secret；"
            "WECOM_AGENT_SECRET：应用管理 → 自建应用 → Secret。",
            "重置 secret 后更新 .env 并重启；用 `wxkf doctor` 逐个检查。",
        ),
        (
            "WECOM_KF_SECRET: 应用管理 → 微信客服 → API → Secret; WECOM_CONTACT_SECRET: 客户与上下游 → "
            "客户联系 → API → Secret; WECOM_AGENT_SECRET: 应用管理 → your app → Secret.",
            "After resetting a secret update .env and restart; `wxkf doctor` checks each one.",
        ),
    ),
    _errcode(
        40013,
        "credentials",
        "Invalid corp id",
        "WECOM_CORP_ID 填错了（企业ID 以 ww 或 wx 开头）。",
        "WECOM_CORP_ID is wrong (corp ids start with 'ww' or 'wx').",
        ("管理后台 → 我的企业 → 企业信息 → 企业ID，复制到 WECOM_CORP_ID 后重启。",),
        ("Copy 我的企业 → 企业信息 → 企业ID into WECOM_CORP_ID and restart.",),
    ),
    _errcode(
        40014,
        "credentials",
        "Invalid access_token",
        "access_token 无效：被企业微信提前作废，或用了别的 secret 换来的 token（例如用客户联系的 token 调微信客服接口）。"
        "wxkf 会自动刷新一次并重试。",
        "The access_token is invalid: WeCom revoked it early, or it came from another secret (e.g. a "
        "customer-contact token used on a kf API). wxkf refreshes once and retries by itself.",
        (
            "偶发可忽略；持续出现时检查调用该接口所用的 secret 是否正确（微信客服接口要用 WECOM_KF_SECRET）。",
            "运行 `wxkf doctor` 检查每个 secret。",
        ),
        (
            "Once in a while is harmless; if it persists, check the API uses the right secret (kf APIs need "
            "WECOM_KF_SECRET).",
            "Run `wxkf doctor` to check every secret.",
        ),
    ),
    _errcode(
        42001,
        "credentials",
        "access_token expired",
        "access_token 有效期 2 小时；wxkf 在过期前刷新，遇到 42001 也会刷新一次并重试。",
        "An access_token lives 2 hours; wxkf refreshes it before expiry and once more on 42001.",
        (
            "偶发可忽略；频繁出现时检查服务器时钟（`wxkf doctor` 会检查），以及所有副本是否连同一个数据库（共享 token）。",
        ),
        (
            "Once in a while is harmless; if frequent, check the server clock (`wxkf doctor` does) and that "
            "all replicas share one database (the token is shared there).",
        ),
    ),
    _errcode(
        41001,
        "credentials",
        "access_token missing",
        "请求 URL 中没有 access_token：通常是 WECOM_API_BASE 指向了会改写或丢弃查询参数的代理。",
        "The request URL carries no access_token: usually WECOM_API_BASE points at a proxy that rewrites or "
        "drops the query string.",
        ("检查 WECOM_API_BASE（默认 https://qyapi.weixin.qq.com），代理需原样转发查询参数。",),
        ("Check WECOM_API_BASE (default https://qyapi.weixin.qq.com); a proxy must keep the query string.",),
    ),
    _errcode(
        48002,
        "credentials",
        "The app may not call this API",
        "所用 secret 对应的应用没有该接口的权限：微信客服接口要用微信客服的 secret（或在微信客服中授权的自建应用），"
        "客户联系接口要用客户联系的 secret；客服账号也需要由该应用通过 API 管理。",
        "The app behind this secret lacks permission for the API: kf APIs need the 微信客服 secret (or a "
        "self-built app authorised in 微信客服), customer-contact APIs the 客户联系 secret; the kf account must "
        "also be managed through the API by that app.",
        (
            "管理后台 → 应用管理 → 微信客服 → API：设置「可调用接口的应用」，并把客服账号交给该应用管理。",
            "客户联系：客户与上下游 → 客户联系 → API → 可调用应用，并确认成员在应用可见范围内。",
            "核对 WECOM_KF_SECRET / WECOM_CONTACT_SECRET 没有填反；`wxkf doctor` 会列出每个 secret 能访问的客服账号。",
        ),
        (
            "应用管理 → 微信客服 → API: choose the app allowed to call the API and let it manage the kf accounts.",
            "Customer contact: 客户与上下游 → 客户联系 → API → 可调用应用, and keep the members within the app's "
            "visible range.",
            "Check WECOM_KF_SECRET and WECOM_CONTACT_SECRET are not swapped; `wxkf doctor` lists the kf "
            "accounts each secret reaches.",
        ),
    ),
    _errcode(
        60020,
        "credentials",
        "Untrusted caller IP (企业可信IP)",
        "自建应用只接受「企业可信IP」中列出的来源 IP 的调用；服务器的出口 IP 不在其中。"
        "注意要用企业微信看到的公网出口 IP（错误信息中 from ip 后面的地址），不是服务器的内网 IP。",
        "A self-built app accepts calls only from the IPs in its trusted-IP list (企业可信IP); this server's "
        "egress IP is not in it. Use the public IP WeCom saw (after 'from ip' in the error), "
        "not the server's private address.",
        (
            "管理后台 → 应用管理 → 应用（调用接口的自建应用）→ 企业可信IP → 配置，添加企业微信报告的 IP；约 1 分钟后生效。",
            "不确定出口 IP 时在服务器上运行 `curl ifconfig.me`；多台服务器或 NAT 后面要把所有出口 IP 都加上。",
        ),
        (
            "应用管理 → 应用 (the self-built app making the call) → 企业可信IP → 配置: add the IP WeCom reported; "
            "it takes effect in about 1 minute.",
            "Unsure of the egress IP? Run `curl ifconfig.me` on the server; behind NAT or with several servers add "
            "every egress IP.",
        ),
    ),
    # -- rate limits: wecom-api §7.2, §10 ---------------------------------------------------
    _errcode(
        45009,
        "rate",
        "API call rate limit exceeded",
        "调用太频繁触发了企业微信的频率拦截；分钟级拦截约 1 分钟解除，小时级 1 小时。"
        "wxkf 会有上限地指数退避重试，仍失败才报错。",
        "Calls were too frequent and WeCom throttled them; a per-minute block lifts after about a minute, a "
        "per-hour block after an hour. wxkf retries with bounded exponential backoff first.",
        (
            "等待 1–2 分钟后重试。",
            "检查是否有循环重复调用（例如每个请求都获取 token；wxkf 把 token 缓存在数据库中共享）。",
            "带 debug=1 的调用每分钟只允许 5 次，排查完去掉。",
        ),
        (
            "Wait 1–2 minutes and try again.",
            "Look for loops calling the same API (e.g. gettoken per request; wxkf caches the token in the "
            "database).",
            "Calls with debug=1 are limited to 5 per minute; drop it after debugging.",
        ),
    ),
    _errcode(
        45033,
        "rate",
        "Too many concurrent calls",
        "同一企业对同一接口的并发调用过多，例如反复并发获取同一个 media_id。wxkf 会退避重试。",
        "Too many concurrent calls from one corp to one API, e.g. fetching the same media_id in parallel. wxkf backs off and retries.",
        ("降低任务 worker 的并发数；缓存已下载的媒体文件，不要重复获取。",),
        ("Lower the job workers' concurrency; cache downloaded media instead of fetching it again.",),
    ),
    _errcode(
        -1,
        "rate",
        "WeCom is busy",
        "企业微信服务器暂时不可用；官方建议稍后重试，不超过 3 次。wxkf 会有上限地退避重试。",
        "WeCom's servers are briefly unavailable; the official advice is to retry later, at most 3 times. "
        "wxkf retries with bounded backoff.",
        ("稍后再试；持续出现时查看企业微信服务状态。",),
        ("Try again later; if it persists, check WeCom's service status.",),
    ),
    # -- request parameters and customer contact: wecom-api §4, §9 ---------------------------
    _errcode(
        40058,
        "request",
        "Invalid or missing parameter",
        "请求参数不合法：JSON 格式错误、长度或数量超限、必填字段为空（例如缺少 touser / external_userid），"
        "或把 POST 接口用成了 GET。errmsg 中的 invalid param 'xxx' 指出了字段名。",
        "A request parameter is invalid: malformed JSON, a length or count over the limit, a required field "
        "empty (e.g. no touser / external_userid), or a POST API called with GET. The errmsg names the "
        "field: invalid param 'xxx'.",
        (
            "查看日志中该请求的 errmsg，确认字段名。",
            "确认 external_userid 和 open_kfid 已正确传递；事件类消息的 external_userid 要从 event 字段中取。",
        ),
        (
            "Read the errmsg in the log to see which field.",
            "Make sure external_userid and open_kfid are passed; for event messages take external_userid "
            "from the event field.",
        ),
    ),
    _errcode(
        40096,
        "request",
        "Invalid external_userid",
        "external_userid 不合法：拼写错误，或来自别的企业 / 别的应用（external_userid 在不同主体下不同）。",
        "The external_userid is invalid: mistyped, or taken from another corp or app (ids differ between "
        "them).",
        ("只使用本企业接口（sync_msg、externalcontact/list）返回的 external_userid。",),
        ("Use only external_userids returned by this corp's APIs (sync_msg, externalcontact/list).",),
    ),
    _errcode(
        84061,
        "request",
        "No contact relationship with this customer",
        "该客户不是（或已不再是）这位成员的客户：从未添加，或已被删除 / 已删除成员。",
        "The customer is not (or no longer) a contact of this member: never added, or one side deleted the "
        "other.",
        ("用 externalcontact/list?userid=成员 确认关系；需要时请成员重新添加客户。",),
        ("Check with externalcontact/list?userid=<member>; ask the member to add the customer again.",),
    ),
    _errcode(
        41048,
        "request",
        "No customer can receive this group message",
        "add_msg_template 指定的客户都无法接收：筛选条件没有命中客户，或客户都已达到群发接收上限。",
        "None of the customers targeted by add_msg_template can receive it: the filters match nobody, or "
        "every customer has reached the receiving cap.",
        ("检查 sender、external_userid 和 tag_filter；查看返回的 fail_list。",),
        ("Check sender, external_userid and tag_filter; read the fail_list in the response.",),
    ),
    _errcode(
        41064,
        "request",
        "Too many attachments",
        "群发消息的附件最多 9 个。",
        "A group message carries at most 9 attachments.",
        ("把附件减到 9 个以内，或拆成多次群发。",),
        ("Keep to 9 attachments or split the message.",),
    ),
    _errcode(
        41094,
        "request",
        "Group-message reminders over the limit",
        "同一条群发 24 小时内最多提醒成员 3 次。",
        "A group message may be re-announced to members at most 3 times in 24 h.",
        ("24 小时后再提醒，或直接联系成员。",),
        ("Remind again after 24 h, or contact the member directly.",),
    ),
    # -- callbacks and callback crypto: the sample library's codes, wecom-api §1.3, §1.4, §1.8 --
    _errcode(
        -40001,
        "callback",
        "Callback signature check failed",
        "msg_signature 与用 WECOM_TOKEN 计算的签名不一致：WECOM_TOKEN 与后台「接收消息」中的 Token 不同，"
        "代理改写了查询参数（echostr 中的 + 变成空格），或请求并非来自企业微信。",
        "msg_signature does not match the one computed with WECOM_TOKEN: the token differs from the Token in "
        "the callback settings, a proxy rewrote the query string ('+' in echostr became a space), or the "
        "request did not come from WeCom.",
        (
            "从回调配置中重新复制 Token 到 WECOM_TOKEN 并重启。",
            "确认反向代理原样转发查询参数。",
        ),
        (
            "Copy Token from the callback settings into WECOM_TOKEN again and restart.",
            "Make sure the reverse proxy forwards the query string untouched.",
        ),
        title_zh="回调签名校验失败",
    ),
    _errcode(
        -40002,
        "callback",
        "Callback XML could not be parsed",
        "请求体不是企业微信的回调 XML（例如健康检查、代理的错误页），或是被拒绝的恶意 XML（实体扩展、外部实体）。",
        "The body is not WeCom callback XML (a health check, a proxy's error page), or hostile XML that was "
        "refused (entity expansion, external entities).",
        ("确认回调 URL 只配置给企业微信，代理不改写请求体。",),
        ("Make sure only WeCom posts to the callback URL and proxies leave the body untouched.",),
        title_zh="回调 XML 解析失败",
    ),
    _errcode(
        -40003,
        "callback",
        "Computing the signature failed",
        "官方示例库在计算签名出错时返回此码（通常是 timestamp 或 nonce 为空）；wxkf 自身不会产生它。",
        "The official sample library returns this when computing a signature fails (usually an empty "
        "timestamp or nonce); wxkf itself never does.",
        ("检查回调请求是否带有 msg_signature、timestamp 和 nonce 参数。",),
        ("Check the callback request carries msg_signature, timestamp and nonce.",),
        title_zh="计算签名失败",
    ),
    _errcode(
        -40004,
        "callback",
        "Invalid EncodingAESKey",
        "WECOM_AES_KEY 不是 43 个字母数字，或不是合法的 base64。",
        "WECOM_AES_KEY is not 43 letters and digits, or not valid base64.",
        ("从回调配置中重新复制 EncodingAESKey（43 个字符，不带 =）到 WECOM_AES_KEY。",),
        ("Copy EncodingAESKey (43 characters, no '=') from the callback settings into WECOM_AES_KEY.",),
        title_zh="EncodingAESKey 非法",
    ),
    _errcode(
        -40005,
        "callback",
        "Corp id check failed",
        "解密出的 receiveid 与 WECOM_CORP_ID 不一致：企业ID 填错，或回调来自别的企业 / 第三方应用（其 receiveid 是 suiteid）"
        "。",
        "The decrypted receiveid differs from WECOM_CORP_ID: the corp id is wrong, or the callback belongs to "
        "another corp or a third-party suite (whose receiveid is the suiteid).",
        ("把 我的企业 → 企业信息 → 企业ID 复制到 WECOM_CORP_ID；确认回调配置在同一个企业下。",),
        (
            "Copy 我的企业 → 企业信息 → 企业ID into WECOM_CORP_ID; make sure the callback is set up in that corp.",
        ),
        title_zh="企业ID 校验失败",
    ),
    _errcode(
        -40006,
        "callback",
        "AES encryption failed",
        "官方示例库在加密被动回复出错时返回此码，通常是 EncodingAESKey 非法。",
        "The sample library returns this when encrypting a reply fails, usually because of an invalid "
        "EncodingAESKey.",
        ("按 -40004 检查 WECOM_AES_KEY。",),
        ("Check WECOM_AES_KEY as for -40004.",),
        title_zh="AES 加密失败",
    ),
    _errcode(
        -40007,
        "callback",
        "AES decryption failed",
        "密文解不开（填充错误）：WECOM_AES_KEY 与后台的 EncodingAESKey 不一致，或密文被改动。",
        "The ciphertext does not decrypt (bad padding): WECOM_AES_KEY differs from the EncodingAESKey in the "
        "callback settings, or the ciphertext was altered.",
        ("从回调配置中重新复制 EncodingAESKey 到 WECOM_AES_KEY 并重启；修改后台配置后要同步修改 .env。",),
        (
            "Copy EncodingAESKey into WECOM_AES_KEY again and restart; change .env whenever the console changes.",
        ),
        title_zh="AES 解密失败",
    ),
    _errcode(
        -40008,
        "callback",
        "Decrypted buffer is invalid",
        "解密后的明文结构不对（过短，或长度字段超出缓冲区），通常是密钥不对或密文被篡改。",
        "The decrypted plaintext is malformed (too short, or the length field overruns the buffer), usually a "
        "wrong key or tampered ciphertext.",
        ("按 -40007 核对 WECOM_AES_KEY；确认请求来自企业微信。",),
        ("Check WECOM_AES_KEY as for -40007 and that the request comes from WeCom.",),
        title_zh="解密后的数据非法",
    ),
    _errcode(
        -40009,
        "callback",
        "Base64 encoding failed",
        "官方示例库在 base64 编码出错时返回此码；wxkf 不会产生它。",
        "The sample library returns this when base64 encoding fails; wxkf never does.",
        ("如在其他组件中遇到，检查其使用的 EncodingAESKey。",),
        ("If another component reports it, check the EncodingAESKey it uses.",),
        title_zh="base64 编码失败",
    ),
    _errcode(
        -40010,
        "callback",
        "Base64 decoding failed",
        "Encrypt / echostr 不是合法的 base64：常见于 echostr 没有 URL 解码，或 + 被代理改成了空格。",
        "Encrypt / echostr is not valid base64: usually echostr was not URL-decoded, or a proxy turned '+' "
        "into a space.",
        ("确认代理原样转发查询参数；不要对 echostr 做二次编码或解码。",),
        ("Make sure proxies forward the query string untouched and echostr is decoded exactly once.",),
        title_zh="base64 解码失败",
    ),
    _situation(
        "messages-not-received",
        "callback",
        "收不到客户消息",
        "Customer messages are not received",
        "企业微信没有把回调送到 wxkf，或送到了但校验失败：回调 URL 没配置或外网访问不到，URL 校验没通过，"
        "Token / EncodingAESKey 与后台不一致（签名失败 -40001、解密失败 -40007），企业ID 不一致（-40005），"
        "或客服账号没有交给调用 API 的应用管理。",
        "WeCom does not deliver callbacks to wxkf, or they fail verification: the callback URL is missing or "
        "unreachable from the internet, URL verification failed, Token / EncodingAESKey differ from the "
        "console (signature failures -40001, decryption failures -40007), the corp id differs (-40005), or "
        "the kf account is not managed by the API app.",
        (
            "管理后台 → 应用管理 → 微信客服 → API → 回调配置：URL 填 https://你的域名/wecom/callback，"
            "Token 与 WECOM_TOKEN 相同，EncodingAESKey 与 WECOM_AES_KEY 相同，保存时企业微信会在 1 秒内校验 URL。",
            "确认服务器能从外网访问（在另一台机器上 curl 回调 URL）。",
            "查看日志有没有收到回调请求；签名失败、解密失败、企业ID 不一致都会各记一行，并可用 `wxkf explain -40001` 等查看。",
            "运行 `wxkf doctor`：配置了公网 URL 时它会发一次带签名的校验请求。",
        ),
        (
            "应用管理 → 微信客服 → API → 回调配置: URL https://<your domain>/wecom/callback, Token equal to "
            "WECOM_TOKEN, EncodingAESKey equal to WECOM_AES_KEY; on save WeCom verifies the URL within 1 second.",
            "Make sure the server is reachable from the internet (curl the callback URL from another machine).",
            "Look in the log for incoming callbacks; signature, decryption and corp-id failures each log a line "
            "(see `wxkf explain -40001` and friends).",
            "Run `wxkf doctor`: with a public URL configured it sends a signed verification request.",
        ),
    ),
    # -- situations without an errcode --------------------------------------------------------------
    _situation(
        "network-403-404",
        "network",
        "访问企业微信 API 返回 HTTP 403/404",
        "HTTP 403/404 from the WeCom API",
        "403 通常表示服务器 IP 不在白名单（企业可信IP）中；404 通常表示 WECOM_API_BASE 或代理地址不对。",
        "A 403 usually means the server's IP is not whitelisted (企业可信IP); a 404 usually means "
        "WECOM_API_BASE or a proxy address is wrong.",
        (
            "在服务器上运行 `curl ifconfig.me` 获取公网出口 IP。",
            "管理后台 → 应用管理 → 应用 → 企业可信IP（旧版后台：我的企业 → IP 白名单），添加该 IP，约 1 分钟后生效（见 60020）。",
            "确认 WECOM_API_BASE 是 https://qyapi.weixin.qq.com（或你的代理的正确地址）。",
        ),
        (
            "Run `curl ifconfig.me` on the server to get its public egress IP.",
            "Add it under 应用管理 → 应用 → 企业可信IP (older consoles: 我的企业 → IP 白名单); it takes effect in "
            "about 1 minute (see 60020).",
            "Check WECOM_API_BASE is https://qyapi.weixin.qq.com (or your proxy's correct address).",
        ),
    ),
    _situation(
        "connection-timeout",
        "network",
        "连接企业微信超时",
        "Connection to WeCom times out",
        "服务器连不上 qyapi.weixin.qq.com：网络不通、防火墙禁止出站 443、DNS 解析失败或需要代理。"
        "wxkf 会有上限地重试，然后报告 TransportError。",
        "The server cannot reach qyapi.weixin.qq.com: no route, outbound 443 blocked by a firewall, DNS "
        "failure, or a proxy is required. wxkf retries a bounded number of times, then reports a "
        "TransportError.",
        (
            "在服务器上运行 `curl -sS https://qyapi.weixin.qq.com/cgi-bin/gettoken`，能返回 JSON 即网络通。",
            "检查防火墙 / 安全组的出站规则和 DNS；需要代理时设置 HTTPS_PROXY。",
        ),
        (
            "Run `curl -sS https://qyapi.weixin.qq.com/cgi-bin/gettoken` on the server; a JSON answer means the "
            "network is fine.",
            "Check firewall / security-group egress rules and DNS; set HTTPS_PROXY if a proxy is required.",
        ),
    ),
    _situation(
        "pgvector-missing",
        "database",
        "数据库缺少 pgvector 扩展",
        "pgvector is missing from the database",
        "DATABASE_URL 指向的 PostgreSQL 没有安装 pgvector（或版本低于 0.5）；知识库检索需要它。"
        "其他项目在这里常见的报错是 NameError: name 'pgvector' is not defined。",
        "The PostgreSQL behind DATABASE_URL lacks pgvector (or has a version below 0.5), which the knowledge "
        "base needs. Elsewhere this shows up as NameError: name 'pgvector' is not defined.",
        (
            "在数据库服务器上安装与 PostgreSQL 主版本对应的包，例如 `sudo apt install postgresql-16-pgvector`。",
            "以超级用户在该数据库中执行 `CREATE EXTENSION vector;`（已有旧版本时执行 `ALTER EXTENSION vector UPDATE;`）。",
            "或者不设置 DATABASE_URL，使用自带 pgvector 的内置 PostgreSQL。",
        ),
        (
            "Install the package for your PostgreSQL major version on the database server, e.g. "
            "`sudo apt install postgresql-16-pgvector`.",
            "As a superuser run `CREATE EXTENSION vector;` in the database (`ALTER EXTENSION vector UPDATE;` "
            "for an old version).",
            "Or leave DATABASE_URL unset to use the embedded PostgreSQL, which ships pgvector.",
        ),
    ),
    _situation(
        "database-connection",
        "database",
        "数据库连接失败",
        "Cannot connect to the database",
        "DATABASE_URL 写错、PostgreSQL 没有运行、用户没有权限；使用内置数据库时，数据目录不可写或路径过长"
        "（Unix socket 路径限制约 107 字节）。",
        "DATABASE_URL is wrong, PostgreSQL is not running, or the user lacks privileges; with the embedded "
        "database, the data directory is not writable or its path is too long (Unix socket paths are limited "
        "to about 107 bytes).",
        (
            "检查 .env 中的 DATABASE_URL，格式为 postgresql://用户:密码@主机:5432/库名。",
            "确认 PostgreSQL 正在运行（`pg_isready -h 主机`），且该用户能在库中建表（迁移需要）。",
            "运行 `wxkf db upgrade` 验证连接；使用内置数据库时确认 WXKF_DATA_DIR 可写且路径较短。",
        ),
        (
            "Check DATABASE_URL in .env: postgresql://user:password@host:5432/dbname.",
            "Make sure PostgreSQL runs (`pg_isready -h host`) and the user may create tables (migrations need "
            "it).",
            "Run `wxkf db upgrade` to test the connection; with the embedded database keep WXKF_DATA_DIR "
            "writable and short.",
        ),
    ),
    _situation(
        "llm-auth-401",
        "llm",
        "DeepSeek / 大模型接口认证失败（401）",
        "DeepSeek / LLM authentication failed (401)",
        "大模型接口拒绝了 API Key（Error code: 401 - Authentication Fails）：LLM_API_KEY / DEEPSEEK_API_KEY 填错或已失效，"
        "Key 与 LLM_BASE_URL 不是同一家服务，或账户被停用。",
        "The LLM endpoint refused the API key (Error code: 401 - Authentication Fails): LLM_API_KEY / "
        "DEEPSEEK_API_KEY is wrong or revoked, the key belongs to another provider than LLM_BASE_URL, or the "
        "account is disabled.",
        (
            "检查 .env 中的 LLM_API_KEY（或 DEEPSEEK_API_KEY），不要带引号或空格，然后重启。",
            "确认 Key 与 LLM_BASE_URL 对应同一服务，并在服务商官网（如 platform.deepseek.com）确认账户状态和余额。",
            "运行 `wxkf doctor` 检查大模型接口和 Key。",
        ),
        (
            "Check LLM_API_KEY (or DEEPSEEK_API_KEY) in .env, without quotes or spaces, then restart.",
            "Make sure the key and LLM_BASE_URL belong to the same provider, and check the account and balance "
            "on the provider's site (e.g. platform.deepseek.com).",
            "Run `wxkf doctor` to check the LLM endpoint and key.",
        ),
    ),
    _situation(
        "app-start-failure",
        "app",
        "应用启动失败",
        "The application does not start",
        "常见原因：配置不合法（启动时会打印「配置错误 / invalid settings」并指出变量名），端口被占用"
        "（address already in use），或数据库连不上。",
        "Common causes: invalid settings (wxkf prints 'invalid settings' naming each variable), the port is in "
        "use ('address already in use'), or the database is unreachable.",
        (
            "阅读启动输出和数据目录（WXKF_DATA_DIR，默认 ./var）中的日志，按提示修改 .env 中对应的变量。",
            "检查端口占用：`lsof -i :8000` 或 `ss -ltnp | grep 8000`；停止占用进程，或用 `wxkf serve --port 8001`。",
            "运行 `wxkf doctor` 逐项检查配置、数据库和企业微信凭证。",
        ),
        (
            "Read the startup output and the logs in the data directory (WXKF_DATA_DIR, default ./var) and fix "
            "the named variable in .env.",
            "Check the port: `lsof -i :8000` or `ss -ltnp | grep 8000`; stop the other process or run "
            "`wxkf serve --port 8001`.",
            "Run `wxkf doctor` to check settings, database and WeCom credentials one by one.",
        ),
    ),
)


@functools.cache
def _index() -> dict[str, CatalogEntry]:
    return {entry.key: entry for entry in ENTRIES}


def official_entry(errcode: int) -> CatalogEntry | None:
    """An entry for an errcode that only the official table knows: its description, and WeCom's lookup page."""
    official = official_codes().get(errcode)
    if official is None:
        return None
    url_zh = f"查看企业微信官方错误码说明：{official.query_url}"
    url_en = f"See WeCom's errcode lookup: {official.query_url}"
    return CatalogEntry(
        key=str(errcode),
        errcode=errcode,
        title_zh=official.description_zh,
        title_en=f"WeCom errcode {errcode}",
        cause_zh=f"企业微信官方说明：{official.description_zh}。",
        cause_en="See WeCom's official description (in Chinese).",
        fix_zh=(official.check_zh, url_zh) if official.check_zh else (url_zh,),
        fix_en=(url_en,),
        doc_anchor="official-errcodes",
        section="request",
    )


def entry_for(code: int | str) -> CatalogEntry | None:
    """The entry for an errcode (`95018`, `"95018"`, `"-40001"`) or a situation key (`"pgvector-missing"`).

    Hand-written entries come first; any other official errcode gets an entry built from the table.
    """
    key = str(code).strip().lower()
    try:
        errcode: int | None = int(key)
    except ValueError:
        errcode = None
    entry = _index().get(key if errcode is None else str(errcode))  # 095018 and +95018 are 95018
    if entry is not None or errcode is None:
        return entry
    return official_entry(errcode)


def hint_for(errcode: int, errmsg: str = "") -> str:
    """A one-paragraph cause and fix for `errcode`, Chinese first, English beside it.

    For 60020 the hint names the IP WeCom reported in `errmsg` (`from ip: …`), which is the one to add to
    企业可信IP.
    """
    entry = entry_for(errcode)
    if entry is None:
        url = f"https://open.work.weixin.qq.com/devtool/query?e={errcode}"
        return f"未收录的错误码 {errcode}，请查看 / errcode not in the catalog, see: {url}"
    ip_zh = ip_en = ""
    ip = reported_ip(errmsg)
    if errcode == 60020:
        ip_zh = f"企业微信看到的来源 IP 是 {ip}。" if ip else ""
        ip_en = f"WeCom saw the call from {ip}. " if ip else ""
    fix_zh = "".join(entry.fix_zh[: entry.hint_steps])
    fix_en = " ".join(entry.fix_en[: entry.hint_steps])
    return (
        f"{entry.title_zh}：{ip_zh}{fix_zh} / "
        f"{entry.title_en}: {ip_en}{fix_en} "
        f"（详见 / see {entry.guide_link}）"
    )
