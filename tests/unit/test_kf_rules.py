"""Pure rules of the pipeline: splitting, the 48 h / 5 budget, the session-state policy, msgids."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wxkf.kf.budget import MESSAGES_PER_WINDOW, WINDOW, BudgetState
from wxkf.kf.inbound import render_text, to_inbound_message
from wxkf.kf.outbox import is_duplicate_msgid, outbox_msgid
from wxkf.kf.policy import Action, Reason, decide
from wxkf.kf.split import ELLIPSIS, MAX_TEXT_BYTES, add_closing_hint, byte_len, sentences, split_text

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# --- split (wecom-api §4: 2048 bytes per text, at most the remaining budget) ----------------------


def test_short_text_is_one_part() -> None:
    assert split_text("  您好，请问有什么可以帮您？ ", 5) == ["您好，请问有什么可以帮您？"]


def test_blank_text_or_no_budget_gives_nothing() -> None:
    assert split_text("   ", 5) == []
    assert split_text("hello", 0) == []


def test_sentences_split_chinese_and_latin() -> None:
    assert sentences("第一句。第二句！Third one. Fourth? v3.5 stays") == [
        "第一句。",
        "第二句！",
        "Third one. ",
        "Fourth? ",
        "v3.5 stays",
    ]


def test_long_answer_splits_at_sentence_boundaries() -> None:
    sentence = "这是一个用于测试的句子，内容足够长。"  # 54 bytes
    text = sentence * 100  # 5400 bytes → 3 parts
    parts = split_text(text, 5)
    assert len(parts) == 3
    assert all(byte_len(p) <= MAX_TEXT_BYTES for p in parts)
    assert all(p.endswith("。") for p in parts)
    assert "".join(parts) == text


def test_more_parts_than_budget_are_cut_with_an_ellipsis() -> None:
    text = "Sentence number one is here. " * 400  # ~11.6 kB → 6 parts wanted
    parts = split_text(text, 5)
    assert len(parts) == 5
    assert parts[-1].endswith(ELLIPSIS)
    assert all(byte_len(p) <= MAX_TEXT_BYTES for p in parts)


def test_a_sentence_longer_than_a_message_is_cut_without_breaking_characters() -> None:
    text = "长" * 1500  # 4500 bytes, no punctuation
    parts = split_text(text, 5)
    assert [byte_len(p) <= MAX_TEXT_BYTES for p in parts] == [True, True, True]
    assert "".join(parts) == text


@given(st.text(min_size=1, max_size=6000), st.integers(min_value=1, max_value=5))
def test_split_never_exceeds_bytes_or_budget(text: str, budget: int) -> None:
    parts = split_text(text, budget)
    assert len(parts) <= budget
    assert all(0 < byte_len(p) <= MAX_TEXT_BYTES for p in parts)


def test_closing_hint_goes_on_the_last_part_and_still_fits() -> None:
    parts = add_closing_hint(["a", "b" * MAX_TEXT_BYTES], "请再发一条消息。")
    assert parts[0] == "a"
    assert parts[1].endswith("请再发一条消息。")
    assert byte_len(parts[1]) <= MAX_TEXT_BYTES
    assert add_closing_hint(["x"], "  ") == ["x"]


# --- budget (wecom-api §4: 5 messages within 48 h of the customer's last message) ----------------


def test_budget_is_five_within_48_hours_of_the_customer_message() -> None:
    state = BudgetState(None, 0).after_customer_message(T0)
    assert state.remaining(T0 + timedelta(minutes=1)) == MESSAGES_PER_WINDOW
    state, granted = state.after_reserving(6, T0)
    assert granted == 5
    assert state.remaining(T0) == 0
    state, granted = state.after_reserving(1, T0)
    assert granted == 0


def test_budget_expires_after_48_hours() -> None:
    state = BudgetState(T0, 0)
    assert state.remaining(T0 + WINDOW - timedelta(seconds=1)) == 5
    assert state.remaining(T0 + WINDOW) == 0


def test_a_new_customer_message_resets_the_budget_but_an_old_one_does_not() -> None:
    used = BudgetState(T0, 5)
    assert used.after_customer_message(T0 + timedelta(hours=1)) == BudgetState(T0 + timedelta(hours=1), 0)
    assert used.after_customer_message(T0 - timedelta(seconds=1)) == used


def test_no_customer_message_means_no_budget() -> None:
    assert BudgetState(None, 0).remaining(T0) == 0


# --- session-state policy (wecom-api §6) -----------------------------------------


@pytest.mark.parametrize(
    ("state", "policy", "expected"),
    [
        (0, "respect", (Action.SEND, None)),
        (1, "end", (Action.SEND, None)),
        (2, "respect", (Action.SKIP, Reason.QUEUED_FOR_HUMAN)),
        (3, "respect", (Action.SKIP, Reason.HUMAN_SERVING)),
        (3, "end", (Action.END_SESSION, Reason.ENDED_FOR_NEW_SESSION)),
        (4, "end", (Action.SKIP, Reason.SESSION_ENDED)),
    ],
)
def test_policy(state: int, policy: str, expected: tuple[Action, Reason | None]) -> None:
    assert decide(state, policy) == expected  # type: ignore[arg-type]


def test_every_reason_is_explained_in_chinese_and_english() -> None:
    for reason in Reason:
        assert " / " in reason.explain


# --- msgids (wecom-api §4: ≤ 32 bytes of [0-9a-zA-Z_-], unique in the account) -------------------


def test_outbox_msgid_is_deterministic_and_valid() -> None:
    a = outbox_msgid("reply", "wkAAA", "from_msgid_4622416642169452483", 5)
    assert a == outbox_msgid("reply", "wkAAA", "from_msgid_4622416642169452483", 5)
    assert re.fullmatch(r"[0-9a-zA-Z_-]{1,32}", a)
    assert a != outbox_msgid("reply", "wkAAA", "from_msgid_4622416642169452483", 4)
    assert a != outbox_msgid("push", "wkAAA", "from_msgid_4622416642169452483", 5)


def test_duplicate_msgid_detection() -> None:
    assert is_duplicate_msgid(40058, "invalid param: msgid duplicated")
    assert not is_duplicate_msgid(40058, "invalid param 'touser'")
    assert not is_duplicate_msgid(95018, "msgid")


# --- inbound rendering (wecom-api §3 message bodies) ---------------------------------------------


def test_non_text_messages_render_readably() -> None:
    assert render_text("image", {"media_id": "m"}) == "[图片 image]"
    assert "上海" in render_text("location", {"name": "上海", "latitude": 31.2, "longitude": 121.4})
    assert render_text("link", {"title": "T", "url": "https://x"}).startswith("[链接 link] T")
    assert render_text("weird_new_type", {}) == "[weird_new_type]"
    message = to_inbound_message("m1", "text", {"body": {"content": "你好"}}, T0)
    assert (message.text, message.content) == ("你好", {"content": "你好"})
