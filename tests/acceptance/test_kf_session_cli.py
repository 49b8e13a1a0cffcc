"""`wxkf session get|end|transfer` against the simulator, as an operator runs it (force-ending a session)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from wxkf.simulator.testing import SimulatorHandle, run_simulator


def _wxkf(
    sim: SimulatorHandle, database_url: str, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "KF_", "WXKF_"))},
        **{k.upper(): str(v) for k, v in sim.settings_overrides().items()},
        "DATABASE_URL": database_url,
        "WXKF_DATA_DIR": str(tmp_path / "var"),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "wxkf.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_session_end_prints_each_step_and_ends_a_human_session(database_url: str, tmp_path: Path) -> None:
    with run_simulator() as sim:
        customer, servicer = sim.customers[0], sim.servicers[0]
        sim.control.send_text(customer, "你好")
        sim.control.take(customer, servicer)

        got = _wxkf(sim, database_url, tmp_path, "session", "get", sim.open_kfid, customer)
        assert got.returncode == 0, got.stdout + got.stderr
        assert "state=3" in got.stdout
        assert servicer in got.stdout

        ended = _wxkf(sim, database_url, tmp_path, "session", "end", sim.open_kfid, customer)
        assert ended.returncode == 0, ended.stdout + ended.stderr
        for step in ("步骤1", "步骤2", "步骤3", f"servicer_userid: {servicer}", "state=4"):
            assert step in ended.stdout
        assert sim.control.session(customer)["service_state"] == 4
        [trans] = sim.control.calls("kf/service_state/trans")
        assert trans["body"]["servicer_userid"] == servicer


def test_session_transfer_to_an_unknown_servicer_explains_the_error(
    database_url: str, tmp_path: Path
) -> None:
    with run_simulator() as sim:
        customer = sim.customers[0]
        sim.control.send_text(customer, "你好")
        result = _wxkf(
            sim,
            database_url,
            tmp_path,
            "session",
            "transfer",
            sim.open_kfid,
            customer,
            "--servicer",
            "nobody",
        )
        assert result.returncode == 1
        assert "errcode=95014" in result.stdout
        assert "nobody" not in result.stderr  # one readable line, not a traceback
        assert "Traceback" not in result.stdout + result.stderr
