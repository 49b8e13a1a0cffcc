"""The chaos suite's run, long: e.g. 10,000 messages from 1,000 customers over 10 minutes.

The same script as `tests/acceptance/test_chaos.py` (`tests/acceptance/chaos.py`): the simulator, two
`wxkf serve --no-worker`, two `wxkf worker`, one PostgreSQL, each its own process; wxkf processes
killed with SIGKILL at random and started again; PostgreSQL stopped and started again (`--outages`
times); 45009, -1 and revoked tokens on sync_msg and send_msg, callbacks that
fail as if the service were down and callbacks delivered twice. The verdict comes from the
simulator's record: lost, duplicated, out of order, rule breaks, and what is left in the database.

    .venv/bin/python benchmarks/soak.py --messages 10000 --customers 1000 --minutes 10

Not part of `make bench` (its name has no bench_ prefix): it takes as long as it is told to.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the chaos driver lives with the tests

from tests.acceptance.chaos import ChaosPlan, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--outages", type=int, default=5, help="PostgreSQL stops this many times")
    parser.add_argument("--seed", type=int, default=20240101)
    args = parser.parse_args()
    seconds = args.minutes * 60
    plan = ChaosPlan(
        customers=args.customers,
        messages=args.messages,
        writing_seconds=seconds,
        outages=args.outages,
        settle_timeout=180.0,
        seed=args.seed,
    )
    workdir = Path(tempfile.mkdtemp(prefix="wxkf-soak-"))
    started = time.monotonic()
    print(
        f"soak: {plan.messages} messages from {plan.customers} customers over {seconds:.0f} s; "
        f"machine {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}; logs in {workdir}",
        flush=True,
    )
    report = run_chaos(plan, workdir, say=lambda line: print(line, flush=True))
    print(report.summary())
    print(
        f"soak: {time.monotonic() - started:.0f} s in all; load average at the end {os.getloadavg()[0]:.1f}"
    )
    problems = report.problems()
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
