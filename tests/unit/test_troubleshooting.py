"""The generated troubleshooting guide and `wxkf explain`, both rendered from the error catalog."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wxkf.cli import app
from wxkf.ops.troubleshooting import render_guide
from wxkf.wecom.catalog import ENTRIES, official_codes

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
WIDE = {"COLUMNS": "200"}


def test_committed_guide_matches_the_catalog() -> None:
    # When this fails, run `make docs` (python -m wxkf.ops.troubleshooting > docs/troubleshooting.md).
    assert GUIDE.read_text(encoding="utf-8") == render_guide()


def test_every_entry_has_exactly_one_anchor_and_every_link_resolves() -> None:
    guide = render_guide()
    anchors = re.findall(r'<a id="([^"]+)"></a>', guide)
    assert len(anchors) == len(set(anchors))
    for entry in ENTRIES:
        assert anchors.count(entry.doc_anchor) == 1, entry.key
    links = set(re.findall(r"\]\(#([^)]+)\)", guide))
    assert links, "the contents list links to the sections"
    assert links <= set(anchors)


def test_guide_sections_carry_cause_and_fix_in_both_languages() -> None:
    guide = render_guide()
    for entry in ENTRIES:
        section = guide.split(f'<a id="{entry.doc_anchor}"></a>', 1)[1].split("<a id=", 1)[0]
        assert entry.cause_zh in section
        assert entry.cause_en in section
        assert all(step in section for step in (*entry.fix_zh, *entry.fix_en))
        assert f"`wxkf explain {entry.key}`" in section


def test_guide_lists_every_official_errcode() -> None:
    table = render_guide().split('<a id="official-errcodes"></a>', 1)[1]
    rows = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")}
    for code in official_codes():
        assert str(code) in rows or f"[{code}](#" in "".join(rows), code
    assert "[95018](#errcode-95018)" in table


def test_guide_covers_the_debugging_tips() -> None:
    guide = render_guide()
    for needle in ("LOG_LEVEL=DEBUG", "debug=1", "/health", "curl ifconfig.me", "lsof -i :8000"):
        assert needle in guide, needle


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["explain", *args], env=WIDE)
    return result.exit_code, result.output


def test_explain_95018_prints_cause_fix_and_guide_link() -> None:
    code, out = run("95018")
    assert code == 0
    assert "仅智能助手接待" in out
    assert "智能助手接待优先" in out
    assert "发送客服消息时当前会话状态不允许发送" in out  # the official description
    assert "docs/troubleshooting.md#errcode-95018" in out


@pytest.mark.parametrize(
    ("argument", "needle", "link"),
    [
        ("pgvector-missing", "CREATE EXTENSION vector", "#pgvector-missing"),
        ("llm-auth-401", "DEEPSEEK_API_KEY", "#llm-auth-401"),
        ("-40001", "WECOM_TOKEN", "#errcode-minus-40001"),
        ("-1", "系统繁忙", "#errcode-minus-1"),
    ],
)
def test_explain_keys_and_negative_codes(argument: str, needle: str, link: str) -> None:
    code, out = run(argument)
    assert code == 0, out
    assert needle in out
    assert link in out


def test_explain_60020_shows_the_reported_ip() -> None:
    code, out = run(
        "60020", "--errmsg", "not allow to access from your ip, from ip: 198.51.100.23, more info"
    )
    assert code == 0
    assert "198.51.100.23" in out
    assert "企业可信IP" in out


def test_explain_code_only_in_the_official_table_prints_its_description() -> None:
    code, out = run("40003")
    assert code == 0
    assert "无效的UserID" in out
    assert "devtool/query?e=40003" in out


@pytest.mark.parametrize("argument", ["99999999", "no-such-problem"])
def test_explain_unknown_exits_1_with_a_clear_message(argument: str) -> None:
    code, out = run(argument)
    assert code == 1
    assert "unknown errcode or key" in out
    assert argument in out


@pytest.mark.parametrize(
    ("status", "needle", "link"),
    [
        ("401", "DEEPSEEK_API_KEY", "#llm-auth-401"),
        ("403", "企业可信IP", "#network-403-404"),
        ("404", "WECOM_API_BASE", "#network-403-404"),
    ],
)
def test_explain_an_http_status_points_to_its_situation(status: str, needle: str, link: str) -> None:
    """401/403/404 are what people paste from a failing request; they are situations, not errcodes."""
    code, out = run(status)
    assert code == 0, out
    assert needle in out
    assert link in out


def test_the_95018_fix_names_the_setting_as_it_is_spelled() -> None:
    code, out = run("95018")
    assert code == 0
    assert "KF_SESSION_POLICY=end" in out
    assert " session_policy=end" not in out
