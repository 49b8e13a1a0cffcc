"""`wxkf doctor` as an operator runs it: a separate process, settings from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wxkf.simulator.testing import SimulatorHandle, run_simulator


@pytest.fixture
def sim() -> Iterator[SimulatorHandle]:
    with run_simulator() as handle:
        yield handle


def doctor(tmp_path: Path, *args: str, **env: Any) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WECOM_", "LLM_", "DEEPSEEK_", "WXKF_")) and k != "DATABASE_URL"
    }
    environment.update({k.upper(): str(v) for k, v in env.items()})
    environment["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "wxkf.cli", "doctor", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,  # no .env from the developer's checkout
        timeout=120,
    )


def test_json_report_and_exit_code_for_an_untrusted_ip(
    sim: SimulatorHandle, database_url: str, tmp_path: Path
) -> None:
    sim.control.add_fault("gettoken", errcode=60020)
    result = doctor(
        tmp_path, "--json", database_url=database_url, wxkf_data_dir=tmp_path, **sim.settings_overrides()
    )

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["database"]["status"] == "ok"
    assert checks["pgvector"]["status"] == "ok"
    assert checks["wecom_token:kf"]["errcode"] == 60020
    assert "127.0.0.1" in checks["wecom_token:kf"]["detail"]
    assert checks["llm"]["status"] == "skip"
    assert sim.kf_secret not in result.stdout + result.stderr


def test_table_for_a_healthy_setup_exits_zero(
    sim: SimulatorHandle, database_url: str, tmp_path: Path
) -> None:
    # Healthy includes a knowledge base to answer from (an empty one is a ❌ with the `wxkf kb add` fix).
    (tmp_path / "faq.md").write_text("# 店\n## 发票\n电子发票在确认收货后申请。\n", encoding="utf-8")
    env = {"database_url": database_url, "wxkf_data_dir": tmp_path, "kb_embedder": "hashing"}
    added = subprocess.run(
        [sys.executable, "-m", "wxkf.cli", "kb", "add", str(tmp_path / "faq.md")],
        capture_output=True,
        text=True,
        env={**os.environ, **{k.upper(): str(v) for k, v in env.items()}},
        cwd=tmp_path,
        timeout=120,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    result = doctor(tmp_path, **env, **sim.settings_overrides())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "✅" in result.stdout
    assert "❌" not in result.stdout
    assert "gettoken 成功" in result.stdout
    assert sim.kf_secret not in result.stdout


def test_invalid_settings_are_a_failed_row_not_a_crash(tmp_path: Path) -> None:
    result = doctor(tmp_path, "--json", wecom_aes_key="short", wxkf_data_dir=tmp_path)

    assert result.returncode == 1
    (settings,) = json.loads(result.stdout)["checks"]
    assert settings["check"] == "settings"
    assert "WECOM_AES_KEY" in settings["detail"]
