"""Prometheus metrics, read from PostgreSQL at scrape time.

The API server and any number of workers share one database, so every number here comes from the
pipeline's tables (`kf_callback_events`, `kf_inbound`, `kf_outbox`, `kf_counters`), the agent's
`agent_llm_failures` and procrastinate's tables: the same answer whichever replica is scraped, and
nothing lost when a process restarts. A scrape reads everything in one go (`collect`, a
`Snapshot`); `DatabaseCollector`, a prometheus_client custom collector, turns the snapshot into
metric families, and prometheus_client writes the exposition the scraper asked for.

Counters stay monotonic when retention deletes rows (`wxkf.ops.retention`): the rows it deletes are
folded into `kf_counters` in the same statement, and the export adds the two.

`kf_counters` conventions (names written with `wxkf.kf.ledger.count`):
  kf.replied                      messages answered                → wxkf_messages_answered_total
  kf.skipped.<reason>             messages not answered, by reason → wxkf_messages_skipped_total{reason}
  kf.skipped.budget_used_up       the 48 h / 5 budget ran out      → also wxkf_budget_exhausted_total
  kf.send_fail.<fail_type>        msg_send_fail events             → wxkf_send_failures_total{fail_type}
  wecom.errcode.<api>.<n>         every errcode WeCom answered (each attempt; the pipeline's client's
                                  `on_api_error` hook)   → wxkf_wecom_errors_total{api, errcode}
  kf.callback.<outcome>           callbacks refused before storage (and `ignored` non-kf ones), and
                                  stored ones retention deleted    → wxkf_callbacks_total{outcome}
  kf.replies.<kind>.<status>      sent / failed outbox rows retention deleted
                                                                   → wxkf_replies_total{kind, outcome}
  agent.llm_failure.<kind>        LLM calls that gave no answer    → wxkf_llm_failures_total{kind}
  agent.llm.calls, agent.llm.latency_ms, agent.llm.latency_le.<bound>
                                  LLM calls, their summed latency, and how many fell in each bucket
                                  (`llm_latency_counters`)         → wxkf_llm_latency_seconds histogram
  anything else (kf.errcode.<n>, the pipeline's own decision counter, …) → wxkf_counter_total{name}
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool

from wxkf.kf.runtime import WORKER_SILENT_SECONDS

SYNC_LAG_WINDOW = "15 minutes"
# Upper bounds (seconds) of the LLM latency histogram: a chat completion takes 1–20 s; 60 s is past
# any sensible LLM_TIMEOUT_SECONDS with retries.
LLM_LATENCY_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
_LLM_BUCKET = "agent.llm.latency_le."
_WECOM_ERRCODE = "wecom.errcode."
_REPLIES = "kf.replies."
# A worker beats every second (`HEARTBEAT_SECONDS`); one killed a few beats ago is not running.
WORKER_ALIVE = f"{WORKER_SILENT_SECONDS:g} seconds"


def _bound(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return str(int(value)) if value == int(value) else repr(value)


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


_CALLBACK_ROWS = (
    "SELECT count(*) FILTER (WHERE known_account), count(*) FILTER (WHERE NOT known_account), "
    "coalesce(sum(deliveries - 1), 0) FROM kf_callback_events"
)
_SYNC_LAG = f"""
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
_REPLY_ROWS = (
    "SELECT kind, status, count(*) FROM kf_outbox WHERE status <> 'pending' GROUP BY 1, 2 ORDER BY 1, 2"
)
_OUTBOX_DEPTH = "SELECT count(*) FROM kf_outbox WHERE status = 'pending'"
_COUNTERS = "SELECT name, value FROM kf_counters"
_JOBS = "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1 ORDER BY 1"
_ALIVE_WORKERS = (
    f"SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - interval '{WORKER_ALIVE}'"
)


@dataclass
class Snapshot:
    """What one scrape read from the database."""

    callbacks: tuple[int, int, int] = (0, 0, 0)  # stored rows: accepted, unknown account, repeats
    sync_lag: tuple[float | None, float | None, float | None, int] = (None, None, None, 0)
    replies: list[tuple[str, str, int]] = field(default_factory=list)  # (kind, status, rows)
    outbox_depth: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    jobs: list[tuple[str, int]] = field(default_factory=list)
    workers: int = 0


async def collect(pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> Snapshot:
    """Read every number of a scrape on one of the pool's connections, in one round trip."""
    async with pool.connection() as conn, conn.pipeline():
        cursors = [conn.cursor() for _ in range(7)]
        for cursor, sql in zip(
            cursors,
            (_CALLBACK_ROWS, _SYNC_LAG, _REPLY_ROWS, _OUTBOX_DEPTH, _COUNTERS, _JOBS, _ALIVE_WORKERS),
            strict=True,
        ):
            await cursor.execute(sql)
        callbacks, lag, replies, depth, counters, jobs, workers = [await c.fetchall() for c in cursors]
    accepted, unknown, repeats = callbacks[0]
    p50, p95, worst, n = lag[0]
    return Snapshot(
        callbacks=(int(accepted), int(unknown), int(repeats)),
        sync_lag=(p50, p95, worst, int(n)),
        replies=[(str(kind), str(status), int(count)) for kind, status, count in replies],
        outbox_depth=int(depth[0][0]),
        counters={str(name): int(value) for name, value in counters},
        jobs=[(str(status), int(count)) for status, count in jobs],
        workers=int(workers[0][0]),
    )


class _Labelled:
    """Label values → value, summed: rows and the counters retention folded them into are one series."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], float] = {}

    def add(self, value: float, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + value

    def into(
        self, family: CounterMetricFamily | GaugeMetricFamily
    ) -> CounterMetricFamily | GaugeMetricFamily:
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        return family


class DatabaseCollector(Collector):
    """prometheus_client's custom collector over one `Snapshot`: the families, nothing formatted here."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        counters = dict(snap.counters)
        callbacks, replies, errors, skipped, send_fail, llm_failures, other = (_Labelled() for _ in range(7))
        accepted, unknown, repeats = snap.callbacks
        callbacks.add(accepted, "accepted")
        callbacks.add(unknown, "unknown_account")
        callbacks.add(repeats, "duplicate")
        for kind, status, count in snap.replies:
            replies.add(count, kind, status)
        answered = counters.pop("kf.replied", 0)
        llm_calls = counters.pop("agent.llm.calls", 0)
        llm_ms = counters.pop("agent.llm.latency_ms", 0)
        llm_buckets: dict[float, int] = dict.fromkeys(LLM_LATENCY_BUCKETS, 0)
        for name, value in sorted(counters.items()):
            head, _, tail = name.rpartition(".")
            if name.startswith(_LLM_BUCKET):
                upper = name.removeprefix(_LLM_BUCKET)
                if upper != "+Inf":  # the +Inf bucket is every call: agent.llm.calls
                    llm_buckets[float(upper)] = llm_buckets.get(float(upper), 0) + value
            elif name.startswith(_WECOM_ERRCODE):
                api, _, errcode = name.removeprefix(_WECOM_ERRCODE).rpartition(".")
                errors.add(value, api, errcode)
            elif name.startswith(_REPLIES):
                kind, _, status = name.removeprefix(_REPLIES).partition(".")
                replies.add(value, kind, status)
            elif head == "kf.skipped":
                skipped.add(value, tail)
            elif head == "kf.send_fail":
                send_fail.add(value, tail)
            elif head == "kf.callback":
                callbacks.add(value, tail)
            elif head == "agent.llm_failure":
                llm_failures.add(value, tail)
            else:
                other.add(value, name)

        yield callbacks.into(
            CounterMetricFamily(
                "wxkf_callbacks_total", "WeCom callbacks received, by outcome", labels=["outcome"]
            )
        )
        p50, p95, worst, n = snap.sync_lag
        lag = GaugeMetricFamily(
            "wxkf_sync_lag_seconds",
            f"Callback received to customer message recorded, over the last {SYNC_LAG_WINDOW}",
            labels=["quantile"],
        )
        for quantile, seconds in (("0.5", p50), ("0.95", p95), ("1", worst)):
            lag.add_metric([quantile], seconds or 0.0)
        yield lag
        yield GaugeMetricFamily(
            "wxkf_sync_lag_samples", f"Messages in wxkf_sync_lag_seconds (last {SYNC_LAG_WINDOW})", value=n
        )
        yield replies.into(
            CounterMetricFamily(
                "wxkf_replies_total",
                "Outbound messages in the outbox, by kind and outcome",
                labels=["kind", "outcome"],
            )
        )
        yield GaugeMetricFamily(
            "wxkf_outbox_depth", "Outbound messages waiting to be sent", value=snap.outbox_depth
        )
        yield errors.into(
            CounterMetricFamily(
                "wxkf_wecom_errors_total",
                "Errcodes WeCom answered, by API (each attempt)",
                labels=["api", "errcode"],
            )
        )
        yield CounterMetricFamily(
            "wxkf_messages_answered_total", "Customer messages answered", value=answered
        )
        yield skipped.into(
            CounterMetricFamily(
                "wxkf_messages_skipped_total",
                "Customer messages not answered, by reason (session state, …)",
                labels=["reason"],
            )
        )
        yield CounterMetricFamily(
            "wxkf_budget_exhausted_total",
            "Messages not answered because the 48 h / 5 budget was used up",
            value=snap.counters.get("kf.skipped.budget_used_up", 0),
        )
        yield send_fail.into(
            CounterMetricFamily(
                "wxkf_send_failures_total", "msg_send_fail events, by fail_type", labels=["fail_type"]
            )
        )
        yield llm_failures.into(
            CounterMetricFamily(
                "wxkf_llm_failures_total", "LLM calls that gave no usable answer, by kind", labels=["kind"]
            )
        )
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound in sorted(llm_buckets):
            cumulative += llm_buckets[bound]
            buckets.append((_bound(bound), cumulative))
        buckets.append(("+Inf", llm_calls))
        yield HistogramMetricFamily(
            "wxkf_llm_latency_seconds",
            "LLM call latency, failed calls included",
            buckets=buckets,
            sum_value=llm_ms / 1000,
        )
        jobs = GaugeMetricFamily("wxkf_jobs", "Pipeline jobs, by status", labels=["status"])
        for status, count in snap.jobs:
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(
            "wxkf_job_workers", f"Job workers with a heartbeat in the last {WORKER_ALIVE}", value=snap.workers
        )
        yield other.into(
            CounterMetricFamily("wxkf_counter_total", "Other pipeline counters, by name", labels=["name"])
        )


def registry(snapshot: Snapshot) -> CollectorRegistry:
    """A registry holding just this scrape's collector, for prometheus_client's encoders."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(DatabaseCollector(snapshot))
    return scrape


def render(snapshot: Snapshot) -> str:
    """The Prometheus text exposition (version 0.0.4) of a snapshot."""
    return generate_latest(registry(snapshot)).decode()


async def alive_workers(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute(_ALIVE_WORKERS)
    row = await cur.fetchone()
    return int(row[0]) if row else 0
