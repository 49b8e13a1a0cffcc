"""The metrics export's pure parts: LLM latency buckets, and the families a scrape's snapshot becomes."""

from __future__ import annotations

import pytest

from wxkf.ops.metrics import LLM_LATENCY_BUCKETS, Snapshot, llm_latency_counters, render


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


def lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


def test_a_histogram_renders_cumulative_buckets_sum_and_count() -> None:
    counters = {
        "agent.llm.calls": 3,
        "agent.llm.latency_ms": 1250,
        "agent.llm.latency_le.0.5": 1,
        "agent.llm.latency_le.2": 1,
        "agent.llm.latency_le.+Inf": 1,
    }
    text = render(Snapshot(counters=counters))
    assert "# TYPE wxkf_llm_latency_seconds histogram" in text
    assert lines(text, "wxkf_llm_latency_seconds_") == [
        'wxkf_llm_latency_seconds_bucket{le="0.5"} 1.0',
        'wxkf_llm_latency_seconds_bucket{le="1"} 1.0',
        'wxkf_llm_latency_seconds_bucket{le="2"} 2.0',
        'wxkf_llm_latency_seconds_bucket{le="5"} 2.0',
        'wxkf_llm_latency_seconds_bucket{le="10"} 2.0',
        'wxkf_llm_latency_seconds_bucket{le="20"} 2.0',
        'wxkf_llm_latency_seconds_bucket{le="30"} 2.0',
        'wxkf_llm_latency_seconds_bucket{le="60"} 2.0',
        'wxkf_llm_latency_seconds_bucket{le="+Inf"} 3.0',
        "wxkf_llm_latency_seconds_count 3.0",
        "wxkf_llm_latency_seconds_sum 1.25",
    ]


def test_rows_and_the_counters_retention_folded_them_into_are_one_series() -> None:
    """Retention deletes rows and adds them to kf_counters: the exported counter must not go down."""
    before = Snapshot(callbacks=(5, 1, 2), replies=[("reply", "sent", 4)])
    after = Snapshot(
        callbacks=(1, 0, 0),
        replies=[("reply", "sent", 1)],
        counters={
            "kf.callback.accepted": 4,
            "kf.callback.unknown_account": 1,
            "kf.callback.duplicate": 2,
            "kf.replies.reply.sent": 3,
        },
    )
    for snapshot in (before, after):
        text = render(snapshot)
        assert lines(text, "wxkf_callbacks_total{") == [
            'wxkf_callbacks_total{outcome="accepted"} 5.0',
            'wxkf_callbacks_total{outcome="unknown_account"} 1.0',
            'wxkf_callbacks_total{outcome="duplicate"} 2.0',
        ]
        assert lines(text, "wxkf_replies_total{") == ['wxkf_replies_total{kind="reply",outcome="sent"} 4.0']


def test_label_values_are_escaped_by_the_library() -> None:
    text = render(Snapshot(counters={'odd "name"\\n': 1}))
    assert 'wxkf_counter_total{name="odd \\"name\\"\\\\n"} 1.0' in text
