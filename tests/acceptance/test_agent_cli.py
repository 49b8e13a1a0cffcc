"""`wxkf llm check` as an operator runs it, against the local fake LLM server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wxkf.agent.fake_openai import FakeOpenAI


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-right-key") as server:
        yield server


def wxkf(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "DEEPSEEK_"))}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "wxkf.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,  # no .env from the developer's checkout
        timeout=60,
    )


def test_check_with_a_good_key_says_the_llm_answers(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.reply("好")
    result = wxkf(tmp_path, "llm", "check", LLM_BASE_URL=fake.base_url, LLM_API_KEY="sk-right-key")
    assert result.returncode == 0, result.stderr
    assert "大模型可用" in result.stdout
    assert "'好'" in result.stdout


def test_check_with_a_wrong_key_names_the_variables_and_never_prints_the_key(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    result = wxkf(tmp_path, "llm", "check", LLM_BASE_URL=fake.base_url, DEEPSEEK_API_KEY="sk-leaked-secret")
    assert result.returncode == 1
    assert "大模型认证失败" in result.stderr
    assert "DEEPSEEK_API_KEY" in result.stderr
    assert "sk-leaked-secret" not in result.stderr + result.stdout


def test_check_without_a_key_explains_how_to_set_one(tmp_path: Path) -> None:
    result = wxkf(tmp_path, "llm", "check")
    assert result.returncode == 1
    assert "LLM_API_KEY" in result.stderr
