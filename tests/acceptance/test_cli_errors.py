"""What a user gets wrong gets a message with the fix and a non-zero exit, never a traceback (issue 12, defect 7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from wxkf.cli import app


def _run(args: list[str], **env: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})
    unexpected = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.output, unexpected


@pytest.mark.parametrize(
    "url",
    [
        "garbage",
        "mysql://wxkf:hunter2pass@db.example/wxkf",
        "postgresql://wxkf:hunter2pass@db.example:notaport/wxkf",
        "sqlite:///var/wxkf.db",
    ],
)
def test_a_database_url_that_is_not_postgresql_is_refused_with_the_fix(url: str, tmp_path: Path) -> None:
    code, output, unexpected = _run(["kb", "list"], DATABASE_URL=url, WXKF_DATA_DIR=str(tmp_path))
    assert unexpected is None
    assert code == 2
    assert "DATABASE_URL" in output
    assert "postgresql://" in output  # the shape it should have
    assert "hunter2pass" not in output


@pytest.mark.parametrize("where", ["itself", "a parent"])
def test_a_data_dir_that_is_a_file_is_refused_with_the_fix(tmp_path: Path, where: str) -> None:
    afile = tmp_path / "not-a-dir"
    afile.write_text("x")
    data_dir = afile if where == "itself" else afile / "var"
    code, output, unexpected = _run(["kb", "list"], WXKF_DATA_DIR=str(data_dir))
    assert unexpected is None
    assert code == 2
    assert "WXKF_DATA_DIR" in output


def test_a_huge_document_is_refused_at_once_with_the_limit(database_url: str, tmp_path: Path) -> None:
    from wxkf.agent.kb.loaders import MAX_TEXT_BYTES

    big = tmp_path / "big.txt"
    with big.open("wb") as out:
        out.truncate(MAX_TEXT_BYTES + 1)  # sparse: no time spent writing it
    code, output, unexpected = _run(
        ["kb", "add", str(big)], DATABASE_URL=database_url, WXKF_DATA_DIR=str(tmp_path / "var")
    )
    assert unexpected is None
    assert code == 1
    assert "big.txt" in output
    assert "MiB" in output
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM kb_documents").fetchone() == (0,)


def test_a_file_named_pdf_that_is_not_one_gets_our_message_alone(database_url: str, tmp_path: Path) -> None:
    """A process of its own: logging as a terminal shows it, without pytest's capturing handlers."""
    fake = tmp_path / "fake.pdf"
    fake.write_bytes(b"this is not a pdf at all\n")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WXKF_DATA_DIR": str(tmp_path / "var"),
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [sys.executable, "-m", "wxkf.cli", "kb", "add", str(fake)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    # Our bilingual message and nothing else: not the parser's `EOF marker not found`, `invalid pdf header`.
    assert f"无法读取 PDF {fake} / cannot read the PDF" in done.stderr, done.stderr  # the file named
    ours = ("读取切分", "无法读取 PDF", "未添加任何文件")  # progress, the refusal, nothing added
    assert all(line.startswith(ours) for line in done.stderr.splitlines()), done.stderr
    assert "EOF marker" not in done.stderr + done.stdout
    assert "invalid pdf header" not in done.stderr + done.stdout


def test_two_processes_creating_the_embedded_database_at_once_both_succeed(
    embedded_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wxkf serve` and `wxkf worker` started together: both saw no database, both created it."""
    from wxkf.db import engine

    first = engine.start_embedded(embedded_data_dir, "wxkf_race")
    # The second process checked before the first one created it: it sees no database.
    monkeypatch.setattr(engine, "_DATABASE_EXISTS", "SELECT 1 WHERE %s::text IS NULL")
    second = engine.start_embedded(embedded_data_dir, "wxkf_race")
    assert first == second
    with psycopg.connect(second) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("wxkf_race",)
