"""The error catalog: every official errcode, hand-written cause and fix where operators need it."""

from __future__ import annotations

import re

import pytest

from wxkf.wecom import errors
from wxkf.wecom.catalog import ENTRIES, SECTIONS, entry_for, hint_for, official_codes

# The codes the operations issue names: each needs a hand-written cause and fix, not just the table.
OPERATOR_CODES = [
    95018, 95001, 95002, 95007, 95013, 95014, 95016, 95019, 45009, 45033, 40058, 40001, 40013, 40014,
    42001, 41001, 48002, 60020, 40096, 84061, 41048, 41064, 41094, 95000, 95004, -1,
]  # fmt: skip

# Every situation of the troubleshooting guide that has no errcode of its own.
SITUATION_KEYS = [
    "network-403-404",
    "connection-timeout",
    "pgvector-missing",
    "database-connection",
    "llm-auth-401",
    "app-start-failure",
    "messages-not-received",
]

CJK = re.compile(r"[\u4e00-\u9fff]")
SAMPLE_60020 = (
    "not allow to access from your ip, hint: [1699999999_28_0123abcd], from ip: 203.0.113.7, "
    "more info at https://open.work.weixin.qq.com/devtool/query?e=60020"
)


def test_every_official_errcode_has_its_official_description() -> None:
    codes = official_codes()
    assert len(codes) > 1200  # the whole table of doc 90313, not a hand-picked subset
    for code, official in codes.items():
        entry = entry_for(code)
        assert entry is not None, code
        assert entry.errcode == code
        assert official.description_zh
        if entry.official is not None:
            assert entry.official.description_zh == official.description_zh


def test_official_table_rows_are_parsed_exactly() -> None:
    codes = official_codes()
    assert codes[95018].description_zh == "发送客服消息时当前会话状态不允许发送"
    assert codes[40013].check_zh == "需确认CorpID是否填写正确，在 web管理端-设置 可查看"
    assert codes[60020].check_zh == ""  # "[查看帮助]" is a link on the original page, not advice
    assert codes[-1].description_zh == "系统繁忙"


@pytest.mark.parametrize("code", OPERATOR_CODES)
def test_operator_codes_have_hand_written_cause_and_fix_in_both_languages(code: int) -> None:
    entry = entry_for(code)
    assert entry is not None
    assert entry.doc_anchor.startswith("errcode-")  # its own guide section, not the appendix
    assert CJK.search(entry.title_zh)
    assert CJK.search(entry.cause_zh)
    # English may quote console labels in Chinese, but it is mostly English.
    for english in (entry.title_en, entry.cause_en, *entry.fix_en):
        assert len(re.findall(r"[A-Za-z]", english)) > len(CJK.findall(english))
    assert entry.fix_zh
    assert entry.fix_en
    assert all(CJK.search(step) for step in entry.fix_zh)


@pytest.mark.parametrize("key", SITUATION_KEYS)
def test_every_guide_situation_has_a_stable_key(key: str) -> None:
    entry = entry_for(key)
    assert entry is not None
    assert entry.errcode is None
    assert entry.doc_anchor == key
    assert entry.fix_zh
    assert entry.fix_en


@pytest.mark.parametrize("code", range(-40010, -40000))
def test_every_callback_crypto_code_is_explained(code: int) -> None:
    entry = entry_for(str(code))
    assert entry is not None
    assert entry.section == "callback"
    assert entry.official is None  # library codes, not API errcodes


def test_every_typed_crypto_error_and_special_errcode_has_an_entry() -> None:
    crypto_errors = [
        errors.InvalidSignatureError,
        errors.MalformedXMLError,
        errors.InvalidAESKeyError,
        errors.CorpIdMismatchError,
        errors.DecryptError,
    ]
    for cls in crypto_errors:
        entry = entry_for(cls.code)
        assert entry is not None, cls
        assert entry.section == "callback", cls
    for code in errors.TOKEN_ERRCODES | errors.RETRYABLE_ERRCODES | set(errors._BY_ERRCODE):
        entry = entry_for(code)
        assert entry is not None, code
        assert entry.doc_anchor.startswith("errcode-"), code


def test_keys_and_anchors_are_unique_and_link_safe() -> None:
    keys = [entry.key for entry in ENTRIES]
    anchors = [entry.doc_anchor for entry in ENTRIES]
    assert len(set(keys)) == len(keys)
    assert len(set(anchors)) == len(anchors)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", anchor) for anchor in anchors)
    assert {entry.section for entry in ENTRIES} == set(SECTIONS)


def test_entry_for_accepts_int_string_and_any_case() -> None:
    assert entry_for(95018) is entry_for("95018") is entry_for(" 95018 ")
    assert entry_for("PGVECTOR-MISSING") is entry_for("pgvector-missing")
    assert entry_for(-1) is entry_for("-1")
    assert entry_for("no-such-situation") is None
    assert entry_for(123456789) is None


def test_95018_says_which_reception_setting_and_that_old_sessions_keep_their_state() -> None:
    entry = entry_for(95018)
    assert entry is not None
    fix = "\n".join(entry.fix_zh)
    assert "仅智能助手接待" in fix
    assert "智能助手接待优先" in fix
    assert "已有会话保持原来的状态" in fix
    assert "新会话" in fix
    assert "KF_SESSION_POLICY=end" in fix  # the variable that exists
    assert "wxkf session end" in fix
    assert "existing sessions keep their state" in "\n".join(entry.fix_en)
    for state in ("2", "3", "4"):
        assert state in entry.cause_zh
    assert "48" in entry.cause_zh


def test_60020_hint_names_the_ip_wecom_saw_and_the_trusted_ip_setting() -> None:
    hint = hint_for(60020, SAMPLE_60020)
    assert "203.0.113.7" in hint
    assert "企业可信IP" in hint
    assert "1 分钟" in hint
    assert hint.index("企业可信IP") < hint.index("WeCom saw")  # Chinese first, English beside it
    assert "docs/troubleshooting.md#errcode-60020" in hint
    assert "None" not in hint_for(60020, "not allow to access from your ip")


@pytest.mark.parametrize("code", [*OPERATOR_CODES, -40001, 40003])
def test_hints_are_one_paragraph_chinese_first(code: int) -> None:
    hint = hint_for(code, "")
    assert "\n" not in hint
    chinese, separator, english = hint.partition(" / ")
    assert separator
    assert CJK.search(chinese)
    assert english


def test_hint_for_a_code_only_in_the_official_table_quotes_it() -> None:
    hint = hint_for(40003)
    assert "无效的UserID" in hint
    assert "devtool/query?e=40003" in hint


def test_hint_for_an_unknown_code_says_so() -> None:
    hint = hint_for(987654)
    assert "987654" in hint
    assert "未收录" in hint
    assert "not in the catalog" in hint


def test_error_for_errcode_attaches_the_catalog_hint() -> None:
    exc = errors.error_for_errcode("kf/send_msg", 60020, SAMPLE_60020)
    assert isinstance(exc, errors.PermissionDeniedError)
    assert exc.from_ip == "203.0.113.7"
    assert exc.hint == hint_for(60020, SAMPLE_60020)
    assert "203.0.113.7" in str(exc)
    assert "企业可信IP" in str(exc)
    session = errors.error_for_errcode("kf/send_msg", 95018, "send msg session status invalid")
    assert isinstance(session, errors.SessionStateError)
    assert "仅智能助手接待" in session.hint
    assert "已有会话保持原来的状态" in session.hint  # why old sessions still fail after the change
    assert "existing sessions keep their state" in session.hint


def test_an_errcode_written_with_a_leading_zero_or_a_plus_finds_its_own_entry() -> None:
    entry = entry_for(95018)
    assert entry is not None
    assert entry_for("095018") is entry
    assert entry_for(" +95018 ") is entry
