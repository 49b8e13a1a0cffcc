"""`wxkf contact …` as an operator runs it: separate processes, the simulator, real PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.simulator.testing import SimulatorHandle, run_simulator


@pytest.fixture
def sim() -> Iterator[SimulatorHandle]:
    with run_simulator() as handle:
        yield handle


def _env(sim: SimulatorHandle, database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "CONTACT_", "LLM_"))}
    env.update({k.upper(): str(v) for k, v in sim.settings_overrides().items()})
    env.update({"DATABASE_URL": database_url, "WXKF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"})
    return env


def _wxkf(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wxkf.cli", "contact", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_operator_sends_tracks_and_is_stopped_by_the_cap(
    sim: SimulatorHandle, database_url: str, tmp_path: Path
) -> None:
    env = _env(sim, database_url, tmp_path)
    member, (first, second) = sim.member, sim.external_contacts

    listed = _wxkf(env, tmp_path, "customers", member)
    assert listed.returncode == 0, listed.stderr
    assert first in listed.stdout
    assert "联系人1" in listed.stdout

    sent = _wxkf(
        env, tmp_path, "send", member, first, "您好，新品到了", "--link", "新品介绍|https://example.com/n"
    )
    assert sent.returncode == 0, sent.stderr
    msgid = re.search(r"task created: (\S+)", sent.stdout)
    assert msgid is not None, sent.stdout
    assert "member notified" in sent.stdout

    sim.control.confirm_group_msg(msgid.group(1), member)
    status = _wxkf(env, tmp_path, "status", msgid.group(1))
    assert status.returncode == 0, status.stderr
    assert "1 已发送 / sent" in status.stdout

    again = _wxkf(env, tmp_path, "send", member, first, "再来一条")
    assert again.returncode == 1
    assert first in again.stderr
    assert "receive cap" in again.stderr
    assert "WECOM" not in again.stderr  # no settings, let alone secrets, in the message
    assert sim.contact_secret not in again.stderr + again.stdout

    stranger = sim.customers[0]
    wide = _wxkf(env, tmp_path, "broadcast", member, "周末活动", "--to", f"{first},{second},{stranger}")
    assert wide.returncode == 0, wide.stderr
    assert stranger in wide.stdout  # WeCom's fail_list, reported
    assert "skipped" in wide.stdout  # `first` is at the cap
    wide_id = re.search(r"task created: (\S+)", wide.stdout)
    assert wide_id is not None

    reminded = _wxkf(env, tmp_path, "remind", wide_id.group(1))  # the 3-per-24 h limit: integration tests
    assert reminded.returncode == 0, reminded.stderr
    assert "2 more today" in reminded.stdout

    cancelled = _wxkf(env, tmp_path, "cancel", wide_id.group(1))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "✅ 已取消 / cancelled" in cancelled.stdout
    assert "1 位成员无需再发送" in cancelled.stdout
    tasks = _wxkf(env, tmp_path, "tasks")
    assert tasks.returncode == 0, tasks.stderr
    assert msgid.group(1) in tasks.stdout
    assert wide_id.group(1) in tasks.stdout


def test_times_are_local_and_a_sent_task_is_not_cancelled(
    sim: SimulatorHandle, database_url: str, tmp_path: Path
) -> None:
    env = _env(sim, database_url, tmp_path)
    member, customer = sim.member, sim.external_contacts[0]
    at = int(sim.control.freeze())  # the task's create_time and the member's send_time
    shanghai = datetime.fromtimestamp(at, ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
    utc = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")

    sent = _wxkf(env, tmp_path, "send", member, customer, "已发送的任务")
    assert sent.returncode == 0, sent.stderr
    msgid = re.search(r"task created: (\S+)", sent.stdout)
    assert msgid is not None, sent.stdout
    sim.control.confirm_group_msg(msgid.group(1), member)

    status = _wxkf(env, tmp_path, "status", msgid.group(1))
    assert status.returncode == 0, status.stderr
    assert f"已发送 / sent {shanghai} CST" in status.stdout  # the receive-cap error's format
    assert utc not in status.stdout

    tasks = _wxkf(env, tmp_path, "tasks")
    assert tasks.returncode == 0, tasks.stderr
    assert "时间为 Asia/Shanghai" in tasks.stdout
    assert shanghai in tasks.stdout
    assert utc not in tasks.stdout

    cancelled = _wxkf(env, tmp_path, "cancel", msgid.group(1))
    assert cancelled.returncode == 1, cancelled.stdout
    assert "✅" not in cancelled.stdout + cancelled.stderr
    assert "成员已发送，无法取消" in cancelled.stderr
    assert "nothing to cancel" in " ".join(cancelled.stderr.split())  # rich wraps at 160 columns
    assert "Traceback" not in cancelled.stderr
    status = _wxkf(env, tmp_path, "status", msgid.group(1))
    assert "已取消" not in status.stdout
    assert "1 已发送 / sent" in status.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("tasks", "--days", "-1"),
        ("tasks", "--days", "40"),
        ("customers", "m", "--page", "0"),
        ("customers", "m", "--page-size", "101"),
    ],
)
def test_out_of_range_options_are_refused_before_anything_runs(
    args: tuple[str, ...], database_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "CONTACT_"))}
    env.update({"DATABASE_URL": database_url, "WXKF_DATA_DIR": str(tmp_path / "var")})
    result = _wxkf(env, tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Invalid value" in result.stderr
    assert "Traceback" not in result.stderr
    assert "WECOM_CONTACT_SECRET" not in result.stderr  # refused before settings are read


def test_missing_contact_secret_is_a_clear_error(database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "CONTACT_"))}
    env.update({"DATABASE_URL": database_url, "WXKF_DATA_DIR": str(tmp_path / "var")})
    result = _wxkf(env, tmp_path, "customers", "wangwu")
    assert result.returncode == 1
    assert "WECOM_CONTACT_SECRET" in result.stderr
    assert "客户联系" in result.stderr


def test_staff_chat_lists_customers_through_the_llm(
    sim: SimulatorHandle, database_url: str, tmp_path: Path
) -> None:
    with FakeOpenAI(api_key="sk-test") as fake:
        fake.tool_call("list_my_customers", {})
        fake.reply("你有 2 位客户。")
        env = _env(sim, database_url, tmp_path) | {"LLM_BASE_URL": fake.base_url, "LLM_API_KEY": "sk-test"}
        result = subprocess.run(
            [sys.executable, "-m", "wxkf.cli", "contact", "chat", sim.member],
            env=env,
            cwd=tmp_path,
            input="我有哪些客户？\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "你有 2 位客户。" in result.stdout
        tool_result = next(m for m in fake.chat_requests()[-1].messages if m["role"] == "tool")["content"]
        assert sim.external_contacts[0] in tool_result
