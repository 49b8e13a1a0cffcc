"""The overview page: today's traffic, answers, hand-offs, budget exhaustion, errors and LLM latency.

"Today" is the natural day in `CONTACT_TIMEZONE` (China time by default). Every figure is read from
the pipeline's tables, so every replica shows the same. Errors carry the catalog's fix
(`wxkf.wecom.catalog`). Charts are SVG drawn here, no JavaScript.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape
from psycopg import AsyncConnection

from wxkf.kf.policy import Reason
from wxkf.ops.metrics import LLM_LATENCY_BUCKETS
from wxkf.wecom.catalog import entry_for

_TODAY_INBOUND = """
SELECT count(*) AS messages,
       count(*) FILTER (WHERE status = 'answered') AS answered,
       count(*) FILTER (WHERE status = 'skipped' AND reason = %(budget)s) AS budget_exhausted,
       count(*) FILTER (WHERE status = 'skipped') AS skipped,
       count(DISTINCT external_userid) AS customers
FROM kf_inbound WHERE origin = 3 AND send_time >= %(since)s
"""
_HOURLY = """
SELECT extract(hour FROM send_time AT TIME ZONE %(tz)s)::int AS hour, count(*),
       count(*) FILTER (WHERE status = 'answered')
FROM kf_inbound WHERE origin = 3 AND send_time >= %(since)s GROUP BY 1 ORDER BY 1
"""
_SKIPPED = """
SELECT reason, count(*) FROM kf_inbound
WHERE origin = 3 AND status = 'skipped' AND send_time >= %(since)s GROUP BY 1 ORDER BY 2 DESC
"""
_HANDOFFS = """
SELECT (SELECT count(*) FROM console_unanswered WHERE kind = 'handoff' AND asked_at >= %(since)s),
       (SELECT count(*) FROM console_audit WHERE action IN ('transfer', 'takeover') AND at >= %(since)s)
"""
_OUTBOX_ERRORS = """
SELECT errcode, fail_type, count(*) FROM kf_outbox
WHERE status = 'failed' AND created_at >= %(since)s GROUP BY 1, 2 ORDER BY 3 DESC
"""
_COUNTERS = (
    "SELECT name, value FROM kf_counters WHERE name LIKE 'wecom.errcode.%%' OR name LIKE 'agent.llm.%%'"
)


@dataclass(frozen=True)
class ErrorRow:
    errcode: int | None
    where: str
    count: int
    title: str
    fix: str
    link: str


@dataclass
class Overview:
    since: datetime
    messages: int = 0
    answered: int = 0
    skipped: int = 0
    customers: int = 0
    budget_exhausted: int = 0
    bot_handoffs: int = 0
    staff_handoffs: int = 0
    skipped_by_reason: list[tuple[str, int]] = field(default_factory=list)
    hourly: list[tuple[int, int, int]] = field(default_factory=list)
    errors_today: list[ErrorRow] = field(default_factory=list)
    errors_total: list[ErrorRow] = field(default_factory=list)
    llm_calls: int = 0
    llm_mean_ms: float = 0.0
    llm_p50: str = "-"
    llm_p95: str = "-"
    llm_buckets: list[tuple[str, int]] = field(default_factory=list)

    @property
    def answer_rate(self) -> str:
        handled = self.answered + self.skipped
        return f"{100 * self.answered / handled:.0f}%" if handled else "-"


def today_start(timezone: str, now: datetime) -> datetime:
    local = now.astimezone(ZoneInfo(timezone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _error_row(errcode: int | None, where: str, count: int) -> ErrorRow:
    entry = entry_for(errcode) if errcode is not None else None
    if entry is None:
        return ErrorRow(errcode, where, count, "", "", "")
    fix = "；".join(entry.fix_zh) + " / " + " ".join(entry.fix_en)
    return ErrorRow(errcode, where, count, f"{entry.title_zh} / {entry.title_en}", fix, entry.guide_link)


def _quantile(buckets: Sequence[tuple[float, int]], total: int, q: float) -> str:
    """The bucket bound under which a share `q` of the calls fell (a histogram's resolution)."""
    if total <= 0:
        return "-"
    cumulative = 0
    for bound, count in buckets:
        cumulative += count
        if cumulative >= q * total:
            return f"≤ {bound:g} s"
    return f"> {LLM_LATENCY_BUCKETS[-1]:g} s"


async def overview(conn: AsyncConnection[Any], timezone: str, now: datetime) -> Overview:
    since = today_start(timezone, now)
    result = Overview(since=since)
    params = {"since": since, "tz": timezone, "budget": Reason.BUDGET_USED_UP.value}
    row = await (await conn.execute(_TODAY_INBOUND, params)).fetchone()
    if row is not None:
        result.messages, result.answered, result.budget_exhausted, result.skipped, result.customers = row
    result.hourly = [
        (int(h), int(n), int(a)) for h, n, a in await (await conn.execute(_HOURLY, params)).fetchall()
    ]
    result.skipped_by_reason = [
        (Reason(r).explain if r in Reason._value2member_map_ else str(r), int(n))
        for r, n in await (await conn.execute(_SKIPPED, params)).fetchall()
    ]
    handoffs = await (await conn.execute(_HANDOFFS, params)).fetchone()
    if handoffs is not None:
        result.bot_handoffs, result.staff_handoffs = int(handoffs[0]), int(handoffs[1])
    for errcode, fail_type, count in await (await conn.execute(_OUTBOX_ERRORS, params)).fetchall():
        where = "发送 / send_msg" if fail_type is None else f"msg_send_fail fail_type={fail_type}"
        result.errors_today.append(_error_row(errcode, where, int(count)))
    counters = {str(n): int(v) for n, v in await (await conn.execute(_COUNTERS)).fetchall()}
    for name, value in sorted(counters.items(), key=lambda kv: -kv[1]):
        if name.startswith("wecom.errcode."):
            api, _, code = name.removeprefix("wecom.errcode.").rpartition(".")
            result.errors_total.append(
                _error_row(int(code) if code.lstrip("-").isdigit() else None, api, value)
            )
    result.llm_calls = counters.get("agent.llm.calls", 0)
    if result.llm_calls:
        result.llm_mean_ms = counters.get("agent.llm.latency_ms", 0) / result.llm_calls
    buckets = [(b, counters.get(f"agent.llm.latency_le.{b:g}", 0)) for b in LLM_LATENCY_BUCKETS]
    result.llm_buckets = [(f"≤{b:g}s", n) for b, n in buckets] + [
        (f">{LLM_LATENCY_BUCKETS[-1]:g}s", counters.get("agent.llm.latency_le.+Inf", 0))
    ]
    result.llm_p50 = _quantile(buckets, result.llm_calls, 0.5)
    result.llm_p95 = _quantile(buckets, result.llm_calls, 0.95)
    return result


# --- SVG ------------------------------------------------------------------------------------------


def bar_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[int]]],
    *,
    title: str,
    width: int = 640,
    height: int = 200,
) -> Markup:
    """Grouped bars, one colour class per series (`bar-0`, `bar-1` in the stylesheet), axis and legend."""
    left, bottom, top = 36, 24, 20
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max([1, *(v for _, values in series for v in values)])
    slot = plot_w / max(1, len(labels))
    bar_w = max(1.0, (slot - 2) / max(1, len(series)))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}"/>',
        f'<text class="tick" x="{left - 4}" y="{top + 4}" text-anchor="end">{peak}</text>',
        f'<text class="tick" x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for i, label in enumerate(labels):
        x0 = left + i * slot + 1
        for s, (name, values) in enumerate(series):
            value = values[i] if i < len(values) else 0
            h = plot_h * value / peak
            parts.append(
                f'<rect class="bar-{s}" x="{x0 + s * bar_w:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"><title>{escape(label)} {escape(name)}: {value}</title></rect>'
            )
        if len(labels) <= 12 or i % 3 == 0:
            parts.append(
                f'<text class="tick" x="{x0 + slot / 2:.1f}" y="{height - 8}" text-anchor="middle">{escape(label)}</text>'
            )
    for s, (name, _) in enumerate(series):
        x = left + s * 120
        parts.append(f'<rect class="bar-{s}" x="{x}" y="4" width="10" height="10"/>')
        parts.append(f'<text class="legend" x="{x + 14}" y="13">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()


def hourly_chart(data: Overview) -> Markup:
    by_hour = {h: (n, a) for h, n, a in data.hourly}
    labels = [f"{h:02d}" for h in range(24)]
    return bar_chart(
        labels,
        [
            ("客户消息 / messages", [by_hour.get(h, (0, 0))[0] for h in range(24)]),
            ("已回答 / answered", [by_hour.get(h, (0, 0))[1] for h in range(24)]),
        ],
        title="今日每小时消息 / messages per hour today",
    )


def latency_chart(data: Overview) -> Markup:
    return bar_chart(
        [label for label, _ in data.llm_buckets],
        [("LLM 调用 / calls", [n for _, n in data.llm_buckets])],
        title="LLM 延迟分布 / LLM latency",
    )
