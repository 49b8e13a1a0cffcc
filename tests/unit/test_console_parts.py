"""The console's pure parts: budget wording, what counts as unanswered, entries, charts, redirects, cookies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from wxkf.agent.kb.embedders import HashingEmbedder
from wxkf.kf.responder import Conversation, InboundMessage, Reply, ReplyRequest
from wxkf.web.console.auth import (
    ConsoleAuthError,
    CookieSigner,
    check_new_password,
    check_role,
    check_username,
)
from wxkf.web.console.conversations import Budget, ConsoleRefusal, ConversationRow, check_reply_text
from wxkf.web.console.live import EVERYTHING, MAX_KEYS, Subscription
from wxkf.web.console.overview import bar_chart
from wxkf.web.console.routes import _safe_next, same_site
from wxkf.web.console.unanswered import cosine, entry_markdown, group_similarity, unanswered_kind

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_the_budget_says_what_is_left_and_why_nothing_is() -> None:
    assert Budget.of(NOW - timedelta(hours=1), 2, NOW).explain.startswith("剩余 3/5 条")
    used_up = Budget.of(NOW - timedelta(hours=1), 5, NOW)
    assert used_up.remaining == 0
    assert "5 条已用完" in used_up.explain
    expired = Budget.of(NOW - timedelta(hours=49), 0, NOW)
    assert expired.remaining == 0
    assert expired.expires_at is None
    assert "48 小时内没有发消息" in expired.explain
    assert Budget.of(None, 0, NOW).remaining == 0


def test_a_staff_reply_must_be_text_within_wecoms_2048_bytes() -> None:
    assert check_reply_text("  你好 ") == "你好"
    with pytest.raises(ConsoleRefusal, match="为空"):
        check_reply_text("   ")
    assert check_reply_text("好" * 682)  # 2046 bytes
    with pytest.raises(ConsoleRefusal, match="2049 字节"):
        check_reply_text("好" * 683)


def _request(*texts: str) -> ReplyRequest:
    messages = [InboundMessage(f"m{i}", "text", {"content": t}, t, NOW) for i, t in enumerate(texts)]
    return ReplyRequest(Conversation("wk", "wm"), messages, remaining_budget=5)


def test_what_counts_as_a_question_the_bot_could_not_answer() -> None:
    assert unanswered_kind(_request("能开专票吗"), Reply("转人工", handoff=True)) == "handoff"
    assert unanswered_kind(_request("能开专票吗"), Reply("不清楚")) == "no_answer"
    assert unanswered_kind(_request("运费多少"), Reply("满 99 包邮", sources=["faq.md"])) is None
    assert unanswered_kind(_request("你好"), Reply("您好")) is None  # a greeting is not a question
    assert (
        unanswered_kind(_request("转人工"), Reply("好的", handoff=True)) is None
    )  # nor a request for a human
    assert unanswered_kind(_request(""), Reply("", handoff=True)) is None


def test_similar_questions_group_and_unrelated_ones_do_not() -> None:
    import asyncio

    embedder = HashingEmbedder()
    vectors = asyncio.run(
        embedder.embed(["可以开增值税专用发票吗？", "能开增值税专用发票吗", "你们周末营业吗"])
    )
    alike = group_similarity(embedder)
    assert cosine(vectors[0], vectors[1]) >= alike
    assert cosine(vectors[0], vectors[2]) < alike
    assert cosine([1.0], [1.0, 0.0]) == 0.0


def test_an_entry_keeps_the_other_ways_customers_asked() -> None:
    markdown = entry_markdown(
        "能开专票吗？", "可以，请提供税号。", ["能开专票吗？", "可以开增值税专用发票吗", " "]
    )
    assert markdown.startswith("# 能开专票吗？\n\n可以，请提供税号。\n")
    assert "相似问法 / also asked: 可以开增值税专用发票吗" in markdown
    assert markdown.count("能开专票吗") == 1


def test_charts_escape_their_labels() -> None:
    svg = str(bar_chart(["<b>"], [("<script>", [3])], title="t&t"))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert 'aria-label="t&amp;t"' in svg


def test_a_stream_coalesces_a_burst_into_one_event() -> None:
    subscription = Subscription()
    for _ in range(3):
        subscription.push("wk wm1")
    subscription.push("wk wm2")
    assert subscription.take() == ["wk wm1", "wk wm2"]
    for n in range(MAX_KEYS + 1):
        subscription.push(f"wk wm{n}")
    assert subscription.take() == [EVERYTHING]
    assert not subscription.ready.is_set()


def test_after_login_only_console_paths_are_followed() -> None:
    assert _safe_next("/console/kb?q=1") == "/console/kb?q=1"
    for hostile in ("https://evil.example/", "//evil.example", "/console\\@evil", "", None):
        assert _safe_next(hostile) == "/console/conversations"


def test_cookies_are_signed_and_read_back_only_unchanged() -> None:
    signer = CookieSigner("k" * 48)
    cookie = signer.session(7, 3)
    user_id, epoch, csrf = signer.read_session(cookie) or (0, 0, "")
    assert (user_id, epoch) == (7, 3)
    assert len(csrf) > 20
    assert signer.read_session(cookie[:-2] + "xx") is None
    assert CookieSigner("other" * 10).read_session(cookie) is None
    assert signer.read_login_token(cookie) is None  # a session cookie is not a login token
    assert signer.read_flash(signer.flash("ok", "已保存")) == ("ok", "已保存")


def test_account_names_passwords_and_roles_are_checked() -> None:
    assert check_username(" alice ") == "alice"
    for bad in ("", "a b", "x" * 65):
        with pytest.raises(ConsoleAuthError):
            check_username(bad)
    with pytest.raises(ConsoleAuthError, match="至少 8 个字符"):
        check_new_password("short")
    assert check_role("agent") == "agent"
    with pytest.raises(ConsoleAuthError):
        check_role("root")


class _Request:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


def test_same_site_reads_fetch_metadata_origin_and_referer() -> None:
    host = {"host": "kf.example.com"}
    assert same_site(_Request(host | {"origin": "https://kf.example.com"}))  # type: ignore[arg-type]
    assert same_site(_Request(host | {"sec-fetch-site": "same-origin"}))  # type: ignore[arg-type]
    assert not same_site(_Request(host | {"origin": "https://evil.example"}))  # type: ignore[arg-type]
    assert not same_site(_Request(host | {"referer": "https://evil.example/x"}))  # type: ignore[arg-type]
    assert not same_site(_Request(host | {"sec-fetch-site": "cross-site"}))  # type: ignore[arg-type]
    assert not same_site(_Request(host | {"sec-fetch-site": "same-site"}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "expected"),
    [(1, "机器人接待"), (2, "排队等待人工"), (3, "人工接待"), (4, "机器人接待")],
)
def test_the_list_says_a_queued_customer_waits_for_a_person_and_a_served_one_has_one(
    state: int, expected: str
) -> None:
    row = ConversationRow(
        "wk",
        "wm",
        "",
        state,
        NOW,
        "zhangsan" if state == 3 else None,
        Budget.of(NOW, 0, NOW),
        "",
        "",
        None,
        None,
        None,
        False,
    )
    assert row.bot_status(lambda when, fmt: "").startswith(expected)
