"""Run every benchmark in this folder, one after another, each in its own process.

    make bench                       # all of them
    .venv/bin/python benchmarks/run_all.py crypto client   # a selection, by name

Each script prints its own figures (baseline, measured, ratio); copy them with the machine's description
into README.md beside this file.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main(selected: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if selected:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in selected]
    failed = 0
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script)])
        print(f"   ({time.monotonic() - started:.0f} s, exit {code})", flush=True)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
