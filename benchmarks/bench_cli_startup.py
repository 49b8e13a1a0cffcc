"""CLI start-up: `wxkf --help`, `wxkf version` and `wxkf explain 95018`, against a bare interpreter.

Each command runs as a fresh process (`python -m wxkf.cli …`), in alternating rounds with the
baseline (`python -c pass`, the interpreter's own start-up), so that outside load hits both alike;
the best of each side is kept. The ratio is the figure to compare across machines.

    .venv/bin/python benchmarks/bench_cli_startup.py
    .venv/bin/python benchmarks/bench_cli_startup.py --src /path/to/other/checkout/src   # compare a tree
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

ROUNDS = 7
COMMANDS: dict[str, list[str]] = {
    "wxkf --help": ["-m", "wxkf.cli", "--help"],
    "wxkf version": ["-m", "wxkf.cli", "version"],
    "wxkf explain 95018": ["-m", "wxkf.cli", "explain", "95018"],
}
BASELINE = ["-c", "pass"]


def wall(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", help="import wxkf from this folder instead of the installed one")
    options = parser.parse_args()
    env = dict(os.environ, COLUMNS="120")
    if options.src:
        env["PYTHONPATH"] = options.src
    for args in COMMANDS.values():
        wall(args, env)  # warm the file cache and the bytecode
    best = {name: float("inf") for name in [*COMMANDS, "baseline"]}
    for _ in range(ROUNDS):
        best["baseline"] = min(best["baseline"], wall(BASELINE, env))
        for name, args in COMMANDS.items():
            best[name] = min(best[name], wall(args, env))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"baseline (python -c pass): {best['baseline'] * 1000:.0f} ms")
    for name in COMMANDS:
        print(f"{name}: {best[name] * 1000:.0f} ms, ratio to baseline {best[name] / best['baseline']:.1f}")


if __name__ == "__main__":
    main()
