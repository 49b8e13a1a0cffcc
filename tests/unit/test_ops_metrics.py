"""The metrics export's pure parts: LLM latency buckets and the Prometheus text of a histogram."""

from __future__ import annotations

import pytest

from wxkf.ops.metrics import LLM_LATENCY_BUCKETS, Metric, llm_latency_counters, render


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [(0.0, "0.5"), (0.3, "0.5"), (0.5, "0.5"), (0.51, "1"), (4.2, "5"), (60.0, "60"), (75.0, "+Inf")],
)
def test_a_call_counts_once_in_the_smallest_bucket_it_fits(seconds: float, bucket: str) -> None:
    counters = llm_latency_counters(seconds)
    assert counters == {
        "agent.llm.calls": 1,
        "agent.llm.latency_ms": round(seconds * 1000),
        f"agent.llm.latency_le.{bucket}": 1,
    }


def test_buckets_are_increasing() -> None:
    assert list(LLM_LATENCY_BUCKETS) == sorted(set(LLM_LATENCY_BUCKETS))


def test_a_histogram_renders_buckets_sum_and_count() -> None:
    metric = Metric("wxkf_llm_latency_seconds", "histogram", "LLM call latency")
    metric.add(1, __suffix="_bucket", le="0.5")
    metric.add(2, __suffix="_bucket", le="+Inf")
    metric.add(1.25, __suffix="_sum")
    metric.add(2, __suffix="_count")
    assert render([metric]).splitlines() == [
        "# HELP wxkf_llm_latency_seconds LLM call latency",
        "# TYPE wxkf_llm_latency_seconds histogram",
        'wxkf_llm_latency_seconds_bucket{le="0.5"} 1',
        'wxkf_llm_latency_seconds_bucket{le="+Inf"} 2',
        "wxkf_llm_latency_seconds_sum 1.25",
        "wxkf_llm_latency_seconds_count 2",
    ]
