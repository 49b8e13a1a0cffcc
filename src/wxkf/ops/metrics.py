"""Prometheus metrics, read from PostgreSQL at scrape time.

The API server and any number of workers share one database, so every number here comes from the
pipeline's tables (`kf_callback_events`, `kf_inbound`, `kf_outbox`, `kf_counters`), the agent's
`agent_llm_failures` and procrastinate's tables: the same answer whichever replica is scraped, and
nothing lost when a process restarts. Counters are monotonic as long as the rows are kept.

`kf_counters` conventions (names written with `wxkf.kf.ledger.count`):
  kf.replied                      messages answered                → wxkf_messages_answered_total
  kf.skipped.<reason>             messages not answered, by reason → wxkf_messages_skipped_total{reason}
  kf.skipped.budget_used_up       the 48 h / 5 budget ran out      → also wxkf_budget_exhausted_total
  kf.send_fail.<fail_type>        msg_send_fail events             → wxkf_send_failures_total{fail_type}
  wecom.errcode.<api>.<n>         every errcode WeCom answered (each attempt; the pipeline's client's
                                  `on_api_error` hook)   → wxkf_wecom_errors_total{api, errcode}
  kf.callback.<outcome>           callbacks refused before storage (and `ignored` non-kf ones)
                                                                   → wxkf_callbacks_total{outcome}
  agent.llm.calls, agent.llm.latency_ms, agent.llm.latency_le.<bound>
                                  LLM calls, their summed latency, and how many fell in each bucket
                                  (`llm_latency_counters`)         → wxkf_llm_latency_seconds histogram
  anything else (kf.errcode.<n>, the pipeline's own decision counter, …) → wxkf_counter_total{name}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from wxkf.kf.runtime import WORKER_SILENT_SECONDS

SYNC_LAG_WINDOW = "15 minutes"
# Upper bounds (seconds) of the LLM latency histogram: a chat completion takes 1–20 s; 60 s is past
# any sensible LLM_TIMEOUT_SECONDS with retries.
LLM_LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
_LLM_BUCKET = "agent.llm.latency_le."
_WECOM_ERRCODE = "wecom.errcode."


@dataclass
class Metric:
    name: str
    kind: str  # counter | gauge | summary | histogram
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, float(value)))


def _bound(value: float) -> str:
    return _number(value) if value != float("inf") else "+Inf"


def llm_latency_counters(seconds: float) -> dict[str, int]:
    """The `kf_counters` increments for one LLM call that took `seconds` (see the module docstring).

    Each call adds to one bucket (the smallest bound it fits under); the export makes them cumulative.
    """
    bound = next((b for b in LLM_LATENCY_BUCKETS if seconds <= b), float("inf"))
    return {
        "agent.llm.calls": 1,
        "agent.llm.latency_ms": round(seconds * 1000),
        _LLM_BUCKET + _bound(bound): 1,
    }


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def render(metrics: Iterable[Metric]) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for labels, value in metric.samples:
            name = metric.name
            if "__suffix" in labels:
                labels = dict(labels)
                name += labels.pop("__suffix")
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


async def collect(conninfo: str) -> list[Metric]:
    """Read every metric from the database in one short connection."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:

        async def rows(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
            cur = await conn.execute(sql, params)
            return list(await cur.fetchall())

        callbacks = Metric("wxkf_callbacks_total", "counter", "WeCom callbacks received, by outcome")
        accepted, unknown, repeats = (
            await rows(
                "SELECT count(*) FILTER (WHERE known_account), count(*) FILTER (WHERE NOT known_account), "
                "coalesce(sum(deliveries - 1), 0) FROM kf_callback_events"
            )
        )[0]
        callbacks.add(accepted, outcome="accepted")
        callbacks.add(unknown, outcome="unknown_account")
        callbacks.add(repeats, outcome="duplicate")

        lag = Metric(
            "wxkf_sync_lag_seconds",
            "gauge",
            f"Callback received to customer message recorded, over the last {SYNC_LAG_WINDOW}",
        )
        (p50, p95, worst, n) = (
            await rows(
                f"""
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY lag), max(lag), count(lag)
            FROM (
                SELECT extract(epoch FROM i.recorded_at - c.received_at)::float8 AS lag
                FROM kf_inbound i
                CROSS JOIN LATERAL (
                    SELECT received_at FROM kf_callback_events c
                    WHERE c.open_kfid = i.open_kfid AND c.received_at <= i.recorded_at
                    ORDER BY c.received_at DESC LIMIT 1
                ) c
                WHERE i.origin = 3 AND i.recorded_at > now() - interval '{SYNC_LAG_WINDOW}'
            ) t
            """
            )
        )[0]
        for quantile, value in (("0.5", p50), ("0.95", p95), ("1", worst)):
            lag.add(value or 0.0, quantile=quantile)
        lag_count = Metric(
            "wxkf_sync_lag_samples", "gauge", f"Messages in wxkf_sync_lag_seconds (last {SYNC_LAG_WINDOW})"
        )
        lag_count.add(n)

        replies = Metric(
            "wxkf_replies_total", "counter", "Outbound messages in the outbox, by kind and outcome"
        )
        for kind, status, count in await rows(
            "SELECT kind, status, count(*) FROM kf_outbox WHERE status <> 'pending' GROUP BY 1, 2 ORDER BY 1, 2"
        ):
            replies.add(count, kind=str(kind), outcome=str(status))

        depth = Metric("wxkf_outbox_depth", "gauge", "Outbound messages waiting to be sent")
        depth.add((await rows("SELECT count(*) FROM kf_outbox WHERE status = 'pending'"))[0][0])

        errors = Metric(
            "wxkf_wecom_errors_total", "counter", "Errcodes WeCom answered, by API (each attempt)"
        )

        counters = {
            str(name): int(value) for name, value in await rows("SELECT name, value FROM kf_counters")
        }
        answered = Metric("wxkf_messages_answered_total", "counter", "Customer messages answered")
        answered.add(counters.pop("kf.replied", 0))
        skipped = Metric(
            "wxkf_messages_skipped_total",
            "counter",
            "Customer messages not answered, by reason (session state, …)",
        )
        budget = Metric(
            "wxkf_budget_exhausted_total",
            "counter",
            "Messages not answered because the 48 h / 5 budget was used up",
        )
        budget.add(counters.get("kf.skipped.budget_used_up", 0))
        send_fail = Metric("wxkf_send_failures_total", "counter", "msg_send_fail events, by fail_type")
        llm_calls = counters.pop("agent.llm.calls", 0)
        llm_ms = counters.pop("agent.llm.latency_ms", 0)
        llm_buckets: dict[float, int] = dict.fromkeys(LLM_LATENCY_BUCKETS, 0)
        other = Metric("wxkf_counter_total", "counter", "Other pipeline counters, by name")
        for name, value in sorted(counters.items()):
            head, _, tail = name.rpartition(".")
            if name.startswith(_LLM_BUCKET):
                upper = name.removeprefix(_LLM_BUCKET)
                if upper != "+Inf":  # the +Inf bucket is every call: agent.llm.calls
                    llm_buckets[float(upper)] = llm_buckets.get(float(upper), 0) + value
            elif name.startswith(_WECOM_ERRCODE):
                api, _, errcode = name.removeprefix(_WECOM_ERRCODE).rpartition(".")
                errors.add(value, api=api, errcode=errcode)
            elif head == "kf.skipped":
                skipped.add(value, reason=tail)
            elif head == "kf.send_fail":
                send_fail.add(value, fail_type=tail)
            elif head == "kf.callback":
                callbacks.add(value, outcome=tail)
            elif head == "agent.llm_failure":
                continue  # the agent_llm_failures table below has the same events, with more detail
            else:
                other.add(value, name=name)

        llm_failures = Metric(
            "wxkf_llm_failures_total", "counter", "LLM calls that gave no usable answer, by kind"
        )
        for kind, count in await rows("SELECT kind, count(*) FROM agent_llm_failures GROUP BY 1 ORDER BY 1"):
            llm_failures.add(count, kind=str(kind))
        llm_latency = Metric(
            "wxkf_llm_latency_seconds", "histogram", "LLM call latency, failed calls included"
        )
        cumulative = 0
        for bound in sorted(llm_buckets):
            cumulative += llm_buckets[bound]
            llm_latency.add(cumulative, __suffix="_bucket", le=_bound(bound))
        llm_latency.add(llm_calls, __suffix="_bucket", le="+Inf")
        llm_latency.add(llm_ms / 1000, __suffix="_sum")
        llm_latency.add(llm_calls, __suffix="_count")

        jobs = Metric("wxkf_jobs", "gauge", "Pipeline jobs, by status")
        for status, count in await rows(
            "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1 ORDER BY 1"
        ):
            jobs.add(count, status=str(status))
        workers = Metric(
            "wxkf_job_workers",
            "gauge",
            f"Job workers with a heartbeat in the last {WORKER_SILENT_SECONDS:g} s",
        )
        workers.add(await alive_workers(conn))

    return [
        callbacks, lag, lag_count, replies, depth, errors, answered, skipped, budget, send_fail,
        llm_failures, llm_latency, jobs, workers, other,
    ]  # fmt: skip


async def alive_workers(conn: psycopg.AsyncConnection[Any]) -> int:
    # A worker beats every second (`HEARTBEAT_SECONDS`); one killed a few beats ago is not running.
    cur = await conn.execute(
        "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - make_interval(secs => %s)",
        (WORKER_SILENT_SECONDS,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0
