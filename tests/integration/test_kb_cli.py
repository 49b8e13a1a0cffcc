from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from typer.testing import CliRunner

from wxkf.cli import app

FAQ = "# 小店\n## 发票\n电子发票在确认收货后申请，24 小时内发到邮箱。\n## 门店\n杭州门店每天十点营业。\n"


def test_add_list_search_remove(database_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "WXKF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"}
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "faq.md").write_text(FAQ, encoding="utf-8")
    (docs / "ignored.png").write_bytes(b"\x89PNG")

    added = runner.invoke(app, ["kb", "add", str(docs)], env=env)
    assert added.exit_code == 0, added.output
    assert "added" in added.output
    again = runner.invoke(app, ["kb", "add", str(docs / "faq.md")], env=env)
    assert "unchanged" in again.output

    listed = runner.invoke(app, ["kb", "list"], env=env)
    assert "markdown" in listed.output
    assert " 2 " in listed.output  # two chunks

    found = runner.invoke(app, ["kb", "search", "发票多久能收到"], env=env)
    assert found.exit_code == 0
    assert "小店 > 发票" in found.output
    assert "faq.md" in found.output.replace("\n", "")  # a long temporary path may wrap
    nothing = runner.invoke(app, ["kb", "search", "今天天气怎么样"], env=env)
    assert "nothing relevant" in nothing.output
    for blank in ("", "   "):
        empty = runner.invoke(app, ["kb", "search", blank], env=env)
        assert empty.exit_code == 2, empty.output  # a mistake, not a question nothing answers
        assert "问题不能为空" in empty.output

    removed = runner.invoke(app, ["kb", "remove", str(docs / "faq.md")], env=env)
    assert removed.exit_code == 0, removed.output
    assert "removed" in removed.output
    missing = runner.invoke(app, ["kb", "remove", "42"], env=env)
    assert missing.exit_code == 1
    assert "no such document" in missing.output


def test_unsupported_files_are_refused_before_anything_changes(database_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "WXKF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"}
    (tmp_path / "faq.md").write_text(FAQ, encoding="utf-8")
    (tmp_path / "faq.docx").write_bytes(b"PK")
    result = runner.invoke(app, ["kb", "add", str(tmp_path / "faq.md"), str(tmp_path / "faq.docx")], env=env)
    assert result.exit_code == 1
    assert ".docx" in result.output
    assert "empty" in runner.invoke(app, ["kb", "list"], env=env).output


def test_add_shows_progress_and_reindex_re_embeds_after_a_model_change(
    database_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "WXKF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"}
    (tmp_path / "faq.md").write_text(FAQ, encoding="utf-8")
    added = runner.invoke(app, ["kb", "add", str(tmp_path / "faq.md")], env={**env, "KB_EMBEDDER": "hashing"})
    assert added.exit_code == 0, added.output
    assert "embedding" in added.output
    assert "2/2" in added.output

    stale = runner.invoke(app, ["kb", "search", "发票多久能收到"], env=env)  # now the default model
    assert stale.exit_code == 1
    assert "wxkf kb reindex" in stale.output
    reindexed = runner.invoke(app, ["kb", "reindex"], env=env)
    assert reindexed.exit_code == 0, reindexed.output
    assert "re-embedded 2 chunks" in reindexed.output
    assert "2/2" in reindexed.output
    found = runner.invoke(app, ["kb", "search", "电子票据什么时候给我"], env=env)
    assert "小店 > 发票" in found.output
    assert "already embedded" in runner.invoke(app, ["kb", "reindex"], env=env).output


def test_search_honours_kb_min_relevance(database_url: str, tmp_path: Path) -> None:
    """KB_MIN_RELEVANCE moves the threshold `wxkf kb search` answers at, as it does for the service."""
    runner = CliRunner()
    env = {
        "DATABASE_URL": database_url,
        "WXKF_DATA_DIR": str(tmp_path / "var"),
        "COLUMNS": "200",
        "KB_EMBEDDER": "hashing",
    }
    (tmp_path / "faq.md").write_text(FAQ, encoding="utf-8")
    assert runner.invoke(app, ["kb", "add", str(tmp_path / "faq.md")], env=env).exit_code == 0

    assert "小店 > 发票" in runner.invoke(app, ["kb", "search", "发票多久能收到"], env=env).output
    strict = runner.invoke(app, ["kb", "search", "发票多久能收到"], env={**env, "KB_MIN_RELEVANCE": "2"})
    assert strict.exit_code == 0, strict.output
    assert "nothing relevant" in strict.output

    assert "nothing relevant" in runner.invoke(app, ["kb", "search", "今天天气怎么样"], env=env).output
    lenient = runner.invoke(app, ["kb", "search", "今天天气怎么样"], env={**env, "KB_MIN_RELEVANCE": "0"})
    assert lenient.exit_code == 0, lenient.output
    assert "1. 小店 >" in lenient.output


def test_list_shows_times_in_the_display_timezone_and_says_which(database_url: str, tmp_path: Path) -> None:
    """Stored times are UTC; the CLI shows them in CONTACT_TIMEZONE, as the console does, and names it."""
    runner = CliRunner()
    zone = "America/New_York"
    env = {
        "DATABASE_URL": database_url,
        "WXKF_DATA_DIR": str(tmp_path / "var"),
        "COLUMNS": "200",
        "KB_EMBEDDER": "hashing",
        "CONTACT_TIMEZONE": zone,
    }
    (tmp_path / "faq.md").write_text(FAQ, encoding="utf-8")
    before = datetime.now(ZoneInfo(zone)).replace(second=0, microsecond=0)
    assert runner.invoke(app, ["kb", "add", str(tmp_path / "faq.md")], env=env).exit_code == 0
    listed = runner.invoke(app, ["kb", "list"], env=env).output
    assert f"times in {zone}" in listed
    # A narrow terminal wraps the cell between the date and the time: read them apart, in order.
    days = re.findall(r"\d{4}-\d\d-\d\d", listed)
    clocks = re.findall(r"(?<![\d:])\d\d:\d\d(?![\d:])", listed)
    shown = [
        datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(zone))
        for day, clock in zip(days, clocks, strict=True)
    ]
    assert any(before <= added <= before + timedelta(minutes=2) for added in shown), listed


def test_a_link_to_a_file_outside_the_documents_folder_is_refused(database_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "WXKF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"}
    (tmp_path / "faq.md").write_text(FAQ + "## 账户\n见 [账户表](/etc/passwd)。\n", encoding="utf-8")
    result = runner.invoke(app, ["kb", "add", str(tmp_path / "faq.md")], env=env)
    assert result.exit_code == 1
    assert "/etc/passwd" in result.output
    assert "Traceback" not in result.output
    assert "empty" in runner.invoke(app, ["kb", "list"], env=env).output


def test_a_folder_with_unreadable_files_names_each_and_adds_nothing(
    database_url: str, tmp_path: Path
) -> None:
    """All or nothing (as `add_documents` promises), but every file that cannot be read is named as
    given, so the operator knows which to fix."""
    from ..unit.kb_pdf import minimal_pdf

    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "WXKF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"}
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "faq.md").write_text(FAQ, encoding="utf-8")
    (docs / "manual.pdf").write_bytes(minimal_pdf(["Return within 7 days."]))
    (docs / "sub" / "binary.md").write_bytes(bytes(range(256)) * 4)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    result = runner.invoke(app, ["kb", "add", str(docs)], env={**env, "KB_EMBEDDER": "hashing"})
    assert result.exit_code == 1, result.output
    assert f"无法识别文件 {docs / 'sub' / 'binary.md'} 的编码" in result.output
    assert f"无法读取 PDF {docs / 'broken.pdf'} / cannot read the PDF" in result.output
    assert "nothing was added" in result.output
    assert "faq.md" not in result.output  # the good ones are not blamed
    assert "manual.pdf" not in result.output
    assert "Traceback" not in result.output
    assert "empty" in runner.invoke(app, ["kb", "list"], env=env).output


def test_every_bad_file_given_by_name_is_named_before_anything_is_read(
    database_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "WXKF_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"}
    (tmp_path / "faq.md").write_text(FAQ, encoding="utf-8")
    (tmp_path / "faq.docx").write_bytes(b"PK")
    args = [str(tmp_path / "faq.docx"), str(tmp_path / "faq.md"), str(tmp_path / "missing.md")]
    result = runner.invoke(app, ["kb", "add", *args], env=env)
    assert result.exit_code == 1
    assert f"不支持的文件类型 .docx：{tmp_path / 'faq.docx'}" in result.output
    assert f"no such file: {tmp_path / 'missing.md'}" in result.output
    assert "nothing was added" in result.output
    assert "empty" in runner.invoke(app, ["kb", "list"], env=env).output
