"""`make demo` as a newcomer runs it without a terminal: the scripted tour, end to end, in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from wxkf.agent.kb.bundled import SAMPLE_DIR
from wxkf.agent.kb.loaders import markdown_sections
from wxkf.demo import PARAPHRASE


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
    # A question answered from the bundled knowledge base, with its source named by its title, never
    # by the file it was loaded from.
    assert "满 99 元包邮" in out
    assert "来源：青禾生活馆 常见问题 ›" in out
    assert "shop_faq.md" not in out
    # A paraphrase sharing no character with its entry, answered from that entry.
    [entry] = [
        f"{s.headings[-1]}{s.body}"
        for s in markdown_sections((SAMPLE_DIR / "shop_faq.md").read_text(encoding="utf-8"))
        if s.headings[-1] == "收到的商品有破损怎么办？"
    ]
    assert not set(PARAPHRASE) & set(entry)
    assert "拍下外包装和破损部位的照片" in out
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
    # /image and /voice without vision or speech-to-text: honest words, not a FAQ entry about 图片.
    assert "我暂时无法查看图片，请用文字描述一下问题" in out
    assert "我暂时无法收听语音，请用文字描述一下问题" in out
    # An unknown question is handed to a person on duty, honestly, with the queue notice (msg_code).
    assert "我暂时无法确定答案" in out
    assert "您已进入人工客服排队" in out
    assert "demo finished" in out
    # The staff console, with a login of its own for this run.
    assert "/console  用户 / user: demo  密码 / password: " in out


def test_every_command_works_in_every_state_and_typing_never_waits(
    embedded_data_dir: Path, restore_logging: None
) -> None:
    """/human first, /human twice, /bot with nobody serving (issue 12, defect 9): a message each,
    never a traceback; and lines typed while answers are on their way are taken at once, in order."""
    import io

    from rich.console import Console

    from wxkf.config import Settings
    from wxkf.demo import run_demo

    typed = [
        "/human",
        "/human",
        "有人吗？",
        "/bot",
        "/bot",
        "/six",
        "/state",
        "/48h",
        "/unknown",
        "你好",
        "运费怎么算？",
        "/quit",
    ]
    taken: list[float] = []

    def typing() -> Iterator[str]:
        for line in typed:
            taken.append(time.monotonic())
            yield line

    screen = io.StringIO()
    console = Console(file=screen, width=200)
    run_demo(Settings(_env_file=None, wxkf_data_dir=embedded_data_dir), console, lines=typing())
    out = screen.getvalue()
    assert len(taken) == len(typed)
    assert taken[-1] - taken[0] < 5  # each line taken at once: no line waits for an answer
    assert "Traceback" not in out
    assert "接待人员 zhangsan 接入会话" in out  # /human before the customer ever wrote
    assert "已在接待" in out  # /human again
    assert "没有人工在接待" in out  # /bot with the bot already serving
    assert "unknown command" in out
    assert "满 99 元包邮" in out  # answered after all that, order kept
    assert "demo finished" in out
