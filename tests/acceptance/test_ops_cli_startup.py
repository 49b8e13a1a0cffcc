"""`wxkf --help`, `wxkf version` and `wxkf explain` start without the heavy libraries.

Checked by what a fresh process has imported after running the command, not by timing it (the
figures are in benchmarks/README.md, "CLI start-up"): a module-level import of openai, FastAPI,
SQLAlchemy, procrastinate or pydantic-settings anywhere under `wxkf.cli` makes this fail.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["openai", "fastapi", "sqlalchemy", "procrastinate", "psycopg_pool", "pydantic_settings", "uvicorn"]

PROBE = """
import json, sys
from typer.main import get_command
from wxkf.cli import app
try:
    get_command(app).main(sys.argv[1:], prog_name="wxkf", standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["version"], ["explain", "95018"]])
def test_light_commands_import_no_heavy_library(args: list[str]) -> None:
    probe = PROBE.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert loaded == [], f"wxkf {' '.join(args)} imported {loaded}"
    assert done.stdout.strip()  # the command itself ran and printed
