"""`wxkf kb add` with no terminal (a pipe, a log file) still says how far it is, on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

SECTIONS = 100  # one chunk each: batches of 32, so lines at the start, in between and at the end


def test_adding_into_a_pipe_prints_plain_progress_lines(database_url: str, tmp_path: Path) -> None:
    doc = tmp_path / "big.md"
    doc.write_text(
        "# 手册\n"
        + "".join(f"## 问题 {n}\n第 {n} 个问题的答案：请联系客服，编号 {n}。\n" for n in range(SECTIONS)),
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WXKF_DATA_DIR": str(tmp_path / "var"),
        "KB_EMBEDDER": "hashing",
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [sys.executable, "-m", "wxkf.cli", "kb", "add", str(doc)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert "读取切分开始：共 1 个文档 / reading: 1 documents" in lines, done.stderr
    assert f"向量化开始：共 {SECTIONS} 个片段 / embedding: {SECTIONS} chunks" in lines, done.stderr
    between = [line for line in lines if line.startswith("向量化 ") and "/ embedding " in line]
    assert between, done.stderr
    assert all("预计还需" in line and "left" in line for line in between), between
    assert any(line.startswith(f"向量化完成 {SECTIONS}/{SECTIONS}，用时 ") for line in lines), done.stderr
    assert lines.index(f"向量化开始：共 {SECTIONS} 个片段 / embedding: {SECTIONS} chunks") < lines.index(
        between[0]
    )
    assert "\x1b[" not in done.stderr  # no terminal codes in a log
    assert "added" in done.stdout  # the table of results still goes to stdout
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM kb_chunks").fetchone() == (SECTIONS,)
