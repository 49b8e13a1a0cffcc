"""`wxkf kb add` into a pipe: plain progress lines, a stage's start, about every 10 % or 30 s, its end."""

from __future__ import annotations

from wxkf.agent.kb.cli import PlainProgress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_stage_is_reported_at_its_start_every_tenth_and_at_its_end() -> None:
    lines: list[str] = []
    clock = Clock()
    report = PlainProgress(lines.append, clock=clock)
    report("embed", 0, 1000)
    for done in range(32, 1000, 32):  # batches of 32, a second each
        clock.now += 1
        report("embed", done, 1000)
    clock.now += 1
    report("embed", 1000, 1000)
    report("embed", 1000, 1000)  # the end once
    assert lines[0] == "向量化开始：共 1000 个片段 / embedding: 1000 chunks"
    assert lines[-1] == "向量化完成 1000/1000，用时 0:32 / embedding done: 1000/1000 in 0:32"
    middle = lines[1:-1]
    assert 7 <= len(middle) <= 10, lines  # about every 10 %: every 4th batch of 32
    assert middle[0] == (
        "向量化 128/1000 (13%)，已用 0:04，预计还需 0:27 / embedding 128/1000 (13%), 0:04 elapsed, about 0:27 left"
    )


def test_a_slow_stage_gets_a_line_every_30_seconds_however_little_moved() -> None:
    lines: list[str] = []
    clock = Clock()
    report = PlainProgress(lines.append, clock=clock)
    report("embed", 0, 10_000)
    for done in range(32, 320, 32):  # 1 % in all, 15 s a batch
        clock.now += 15
        report("embed", done, 10_000)
    assert lines[1:] == [
        "向量化 64/10000 (1%)，已用 0:30，预计还需 1:17:37 / embedding 64/10000 (1%), 0:30 elapsed, "
        "about 1:17:37 left",
        "向量化 128/10000 (1%)，已用 1:00，预计还需 1:17:07 / embedding 128/10000 (1%), 1:00 elapsed, "
        "about 1:17:07 left",
        "向量化 192/10000 (2%)，已用 1:30，预计还需 1:16:37 / embedding 192/10000 (2%), 1:30 elapsed, "
        "about 1:16:37 left",
        "向量化 256/10000 (3%)，已用 2:00，预计还需 1:16:07 / embedding 256/10000 (3%), 2:00 elapsed, "
        "about 1:16:07 left",
    ]


def test_a_stage_done_at_its_first_report_is_one_line() -> None:
    lines: list[str] = []
    report = PlainProgress(lines.append, clock=Clock())
    report("add", 1, 1)
    assert lines == ["读取切分完成 1/1，用时 0:00 / reading done: 1/1 in 0:00"]
