"""Push's pure rules: quiet hours, eligibility, conditions, scoring, templates, reply commands, the LLM verdict."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from wxkf.kf.budget import BudgetState
from wxkf.push.conditions import Condition, Conditions, Profile, holds, mentions, parse_condition
from wxkf.push.eligibility import Action, Reason, Situation, decide
from wxkf.push.errors import TemplateError
from wxkf.push.quiet import QuietHours
from wxkf.push.replies import Command, Parsed, parse
from wxkf.push.rerank import parse_verdict
from wxkf.push.scoring import Weights, score
from wxkf.push.templates import Item, TextTemplate, check, render_text

SHANGHAI = ZoneInfo("Asia/Shanghai")
NIGHT = QuietHours(time(22), time(8))


def shanghai(hour: int, minute: int = 0, day: int = 3) -> datetime:
    return datetime(2025, 1, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


# --- quiet hours ------------------------------------------------------------------------------------


def test_quiet_hours_cross_midnight_at_minute_granularity() -> None:
    assert QuietHours.parse("22:00-08:00") == NIGHT
    assert [NIGHT.contains(time(h, m)) for h, m in [(21, 59), (22, 0), (3, 0), (7, 59), (8, 0)]] == [
        False,
        True,
        True,
        True,
        False,
    ]
    lunch = QuietHours.parse("12:30-14:00")
    assert lunch is not None
    assert [lunch.contains(time(h, m)) for h, m in [(12, 29), (12, 30), (13, 59), (14, 0)]] == [
        False,
        True,
        True,
        False,
    ]
    assert QuietHours.parse("") is None


def test_quiet_hours_are_read_in_the_customers_time_zone_not_the_servers() -> None:
    # 15:30 UTC is 23:30 in Shanghai: quiet until 08:00 Shanghai time the next morning (00:00 UTC).
    now = datetime(2025, 1, 3, 15, 30, tzinfo=UTC)
    assert NIGHT.ends_after(now, SHANGHAI) == datetime(2025, 1, 4, 0, 0, tzinfo=UTC)
    assert NIGHT.ends_after(now, ZoneInfo("Europe/London")) is None  # 15:30 in London
    assert NIGHT.ends_after(shanghai(7, 59), SHANGHAI) == shanghai(8)


@pytest.mark.parametrize("text", ["22-08", "25:00-08:00", "22:00-22:00", "22:00~08:00"])
def test_bad_quiet_hours_say_how_to_write_them(text: str) -> None:
    with pytest.raises(ValueError, match="静默时段"):
        QuietHours.parse(text)


# --- eligibility ------------------------------------------------------------------------------------


def situation(now: datetime, **changes: object) -> Situation:
    values: dict[str, object] = {
        "now": now,
        "enabled": True,
        "budget": BudgetState(now - timedelta(hours=1), 1),
        "keep_for_replies": 1,
        "session_state": 1,
        "paused_until": None,
        "quiet": NIGHT,
        "zone": SHANGHAI,
        "sent_today": 0,
        "daily_limit": 10,
        **changes,
    }
    return Situation(**values)  # type: ignore[arg-type]


def test_a_push_goes_inside_the_window_with_budget_outside_quiet_hours() -> None:
    assert decide(situation(shanghai(10))).action is Action.SEND


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"enabled": False}, Reason.DISABLED),
        ({"budget": BudgetState(shanghai(10) - timedelta(hours=48), 0)}, Reason.WINDOW_CLOSED),
        ({"budget": BudgetState(None, 0)}, Reason.WINDOW_CLOSED),
        ({"budget": BudgetState(shanghai(9), 5)}, Reason.BUDGET_USED_UP),
        ({"budget": BudgetState(shanghai(9), 4)}, Reason.LAST_MESSAGE_KEPT),  # the reply's own message
        ({"session_state": 3}, Reason.SESSION_NOT_SENDABLE),
        # Tomorrow at 08:00 is past the window (opened at 09:00 two days ago): not worth waiting for.
        ({"quiet": QuietHours(time(9), time(8))}, Reason.WINDOW_CLOSES_FIRST),
    ],
)
def test_a_push_that_cannot_go_in_this_window_is_dropped_with_its_reason(
    changes: dict[str, object], reason: Reason
) -> None:
    now = shanghai(10)
    if reason is Reason.WINDOW_CLOSES_FIRST:
        changes = {**changes, "budget": BudgetState(now - timedelta(hours=47), 0)}
    decision = decide(situation(now, **changes))
    assert (decision.action, decision.reason) == (Action.DROP, reason)


def test_keeping_no_message_lets_a_push_take_the_last_one() -> None:
    assert (
        decide(situation(shanghai(10), budget=BudgetState(shanghai(9), 4), keep_for_replies=0)).action
        is Action.SEND
    )


@pytest.mark.parametrize(
    ("now", "changes", "reason", "until"),
    [
        (shanghai(23, 30), {}, Reason.QUIET_HOURS, shanghai(8, day=4)),
        (shanghai(10), {"paused_until": shanghai(10, 30)}, Reason.PAUSED, shanghai(10, 30)),
        # The pause ends inside quiet hours: the wait runs on to their end.
        (shanghai(21, 50), {"paused_until": shanghai(22, 10)}, Reason.PAUSED, shanghai(8, day=4)),
        # Past the daily limit: tomorrow, and tomorrow starts quiet, so 08:00.
        (shanghai(15), {"sent_today": 10}, Reason.DAILY_LIMIT, shanghai(8, day=4)),
        (shanghai(15), {"only_tomorrow": True}, Reason.INTENT_DAILY_LIMIT, shanghai(8, day=4)),
        (shanghai(7), {"digest_mode": True, "digest_hour": 9}, Reason.DIGEST, shanghai(9)),
    ],
)
def test_a_push_that_can_go_later_waits_for_the_first_moment_every_rule_allows(
    now: datetime, changes: dict[str, object], reason: Reason, until: datetime
) -> None:
    decision = decide(situation(now, **changes))
    assert (decision.action, decision.reason, decision.until) == (Action.WAIT, reason, until)


def test_the_digest_itself_is_not_held_for_the_digest() -> None:
    assert (
        decide(situation(shanghai(9), digest_mode=True, digest_hour=9, digest_run=True)).action is Action.SEND
    )


# --- conditions and scoring ---------------------------------------------------------------------------

ZHANG = Profile(
    name="张三",
    fields={
        "city": "北京",
        "company": "智元科技",
        "position": "CTO",
        "description": "在北京做 AI 大模型的连续创业者",
    },
    tags=["AI", "连续创业"],
    attributes={"融资轮次": "A轮", "team_size": 30},
)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("city=北京", True),
        ("city=北京|上海", True),
        ("city=上海", False),
        ("tags=ai", True),
        ("tags~创业", True),
        ("text~大模型", True),
        ("position~cto", True),
        ("team_size>20", True),
        ("team_size=10..20", False),
        ("融资轮次=A轮", True),
        ("age>30", False),  # a missing value never holds
    ],
)
def test_conditions_hold_as_a_customer_would_read_them(condition: str, expected: bool) -> None:
    assert holds(parse_condition(condition), ZHANG) is expected


def test_a_latin_keyword_is_a_whole_word_and_a_chinese_one_appears_as_written() -> None:
    assert mentions("AI 创业者", "ai")
    assert not mentions("he said so", "ai")
    assert mentions("人工智能公司", "智能")
    assert not mentions("人工智慧", "智能")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"field": "city", "op": "gt", "value": 3}, "需要数字"),
        ({"field": "age", "op": "between", "value": [40, 30]}, "下限大于上限"),
        ({"field": "age", "op": "eq", "value": "三十"}, "数字字段"),
        ({"field": "city", "op": "in", "value": []}, "1–50"),
        ({"field": "text", "op": "eq", "value": "x"}, "只能用 contains"),
    ],
)
def test_a_condition_that_cannot_be_meant_is_refused_with_the_reason(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Condition.model_validate(data)


def test_required_conditions_are_gates_and_the_score_weighs_the_parts_that_apply() -> None:
    conditions = Conditions.model_validate(
        {
            "required": [{"field": "city", "op": "eq", "value": "北京"}],
            "preferred": [
                {"field": "tags", "op": "contains", "value": "创业"},
                {"field": "age", "op": "lt", "value": 30},
            ],
            "keywords": ["AI", "机器人"],
        }
    )
    weights = Weights(preferred=0.3, keywords=0.2, semantic=0.5)
    scored = score(conditions, ZHANG, similarity=0.6, similarity_range=(0.2, 1.0), weights=weights)
    assert scored is not None
    assert scored.parts == {"preferred": 0.5, "keywords": 0.5, "semantic": 0.5}
    assert scored.score == pytest.approx(0.5)
    assert (
        scored.explanation
        == "符合「城市 = 北京」，满足偏好「标签包含「创业」」，关键词「AI」，内容相近（50%）"
    )
    shanghai_only = conditions.model_copy(update={"required": [parse_condition("city=上海")]})
    assert score(shanghai_only, ZHANG, similarity=0.9, similarity_range=(0.2, 1.0), weights=weights) is None
    excluded = conditions.model_copy(update={"excluded": [parse_condition("text~连续创业")]})
    assert score(excluded, ZHANG, similarity=0.9, similarity_range=(0.2, 1.0), weights=weights) is None
    # No preferred conditions and no vectors: keywords alone decide.
    keywords_only = Conditions(keywords=["AI"])
    only = score(keywords_only, ZHANG, similarity=None, similarity_range=(0.2, 1.0), weights=weights)
    assert only is not None
    assert only.score == 1.0


# --- templates --------------------------------------------------------------------------------------


def test_an_unknown_placeholder_is_refused_by_name() -> None:
    with pytest.raises(TemplateError, match=re.escape("「{score_pct}」不是可用的占位符")):
        check(TextTemplate(content="匹配度 {score_pct}%"))
    with pytest.raises(TemplateError, match="占位符须是名字"):
        check(TextTemplate(content="第 {0} 个"))
    with pytest.raises(TemplateError, match="花括号不成对"):
        check(TextTemplate(content="{profile_name"))
    check(TextTemplate(content="{profile_name}（{score}%）{{原样的花括号}}"))


@pytest.mark.parametrize("spec", ["{profile_name:>999999999}", "{score:.2f}", "{profile_name:{score}}"])
def test_a_format_spec_is_refused_before_anything_renders_it(spec: str) -> None:
    """A width like :>999999999 took 2 GB to render the sample when saved, and again at each push."""
    with pytest.raises(TemplateError, match="不能带格式"):
        check(TextTemplate(content=f"【{spec}】"))


def test_several_matches_become_one_message_within_2048_bytes() -> None:
    items = [
        Item(
            match_id=n,
            profile_name=f"联系人{n}",
            intent_name="寻找AI合作伙伴",
            score=0.85,
            explanation="符合",
            matched=[],
        )
        for n in range(1, 4)
    ]
    text, shown = render_text(TextTemplate(), items)
    assert text.startswith("🎯 为您找到 3 个新匹配")
    assert "2. 【联系人2】寻找AI合作伙伴 · 匹配度 85%" in text
    assert shown == items
    many = [Item(n, "名" * 60, "意图", 0.5, "说明", []) for n in range(1, 40)]
    text, shown = render_text(TextTemplate(), many)
    assert len(text.encode()) <= 2048
    assert 1 < len(shown) < len(many)  # the rest waits for the next message


# --- replies and the LLM's verdict ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("查看1", Parsed(Command.VIEW, 1)),
        ("详情 3", Parsed(Command.VIEW, 3)),
        ("查看２", Parsed(Command.VIEW, 2)),  # full-width digit
        ("不感兴趣", Parsed(Command.NOT_INTERESTED, None)),
        ("不感兴趣 4。", Parsed(Command.NOT_INTERESTED, 4)),
        ("退订", Parsed(Command.UNSUBSCRIBE, None)),
        ("TD", Parsed(Command.UNSUBSCRIBE, None)),
        ("查看订单", None),
        ("我想退订单", None),
    ],
)
def test_reply_commands(text: str, parsed: Parsed | None) -> None:
    assert parse(text) == parsed


@pytest.mark.parametrize(
    "answer",
    [
        "这位很合适，匹配度 0.9",  # prose
        '{"match": true, "score": 0.9',  # broken JSON
        '{"match": true, "score": 1.7, "reason": "好"}',  # out of range
        '{"match": "yes", "score": 0.9, "reason": "好"}',  # not a boolean
        '{"score": 0.9, "reason": "好"}',  # missing field
    ],
)
def test_an_unparseable_llm_answer_is_no_verdict(answer: str) -> None:
    assert parse_verdict(answer) is None


def test_a_valid_llm_answer_is_read_even_in_a_code_fence() -> None:
    verdict = parse_verdict('```json\n{"match": true, "score": 1, "reason": "北京的AI创业者"}\n```')
    assert verdict is not None
    assert (verdict.match, verdict.score) == (True, 1.0)
