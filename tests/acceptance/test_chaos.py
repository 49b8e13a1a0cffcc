"""The chaos suite (issue 12): 1,000 messages from 100 customers through real processes that are
killed at random and restarted one by one as a deploy does, a PostgreSQL that goes away once, a
WeCom that throttles and revokes tokens, and retention deleting what was just handled; every message
answered exactly once, in order, within WeCom's rules (see `tests/acceptance/chaos.py`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.acceptance.chaos import ChaosPlan, run_chaos


@pytest.mark.timeout(300)
def test_every_message_is_answered_exactly_once_through_kills_an_outage_and_faults() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="wxkf-chaos-"))  # short: the data dirs hold sockets
    report = run_chaos(ChaosPlan(), workdir)
    print(report.summary())
    assert report.problems() == [], report.summary()
    # The chaos happened: every kind of process was killed, and the faults fired.
    assert set(report.kills) == {"serve", "worker"}
    assert report.outages == 1
    assert report.graceful_restarts == {"serve": 2, "worker": 2}  # the rolling restart, drained
    assert report.retention_deleted > 0  # retention's passes ran in the traffic (issue 17)
    for api in ("sync_msg", "send_msg"):
        for kind in ("45009", "-1", "invalidate_token"):
            assert report.faults_fired[f"{api} {kind}"] > 0, (api, kind)
