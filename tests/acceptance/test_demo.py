"""`make demo` as a newcomer runs it without a terminal: the scripted tour, end to end, in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_demo(tmp_path: Path, data_dir: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "LLM_", "DEEPSEEK_"))}
    env.update({"WXKF_DATA_DIR": str(data_dir), "COLUMNS": "200"})
    done = subprocess.run(
        [sys.executable, "-m", "wxkf.cli", "demo"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_demo_tour_shows_the_rules_and_the_answers(tmp_path: Path, embedded_data_dir: Path) -> None:
    # Twice on the same data directory: a second tour is a newcomer's second `make demo`.
    first = run_demo(tmp_path, embedded_data_dir)
    out = run_demo(tmp_path, embedded_data_dir)
    assert first.count("您好，我是智能客服") == out.count("您好，我是智能客服") > 0
    # The welcome (send_msg_on_event) and a greeting answered without handing the customer over.
    assert "您好，我是智能客服" in out
    assert "请问有什么可以帮您" in out
    # A question answered from the bundled knowledge base, with its source.
    assert "满 99 元包邮" in out
    assert "sample/shop_faq.md" in out
    # State 3: wxkf stays silent and says why.
    assert "人工接待中（state=3" in out
    # The budget: 6 wanted, only what the window allows is sent.
    assert "通知 1/6" in out
    assert "通知 6/6" not in out
    # /push: a matching profile by day is pushed at once; one at night waits for 08:00; 查看1 answers.
    assert "【张三】符合您的意图【寻找AI合作伙伴】" in out
    assert "客户的静默时段，结束后推送" in out
    assert out.index("08:00 静默时段结束") < out.index("【李四】符合您的意图")
    assert "📇 编号 1：张三" in out
    # An unknown question is handed to a person, honestly.
    assert "我暂时无法确定答案" in out
    assert "demo finished" in out
