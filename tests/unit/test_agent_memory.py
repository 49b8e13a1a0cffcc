"""Memory: token estimates and keeping the newest turns within a budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wxkf.agent.memory import (
    TURN_OVERHEAD_TOKENS,
    ConversationMemory,
    Speaker,
    Turn,
    estimate_tokens,
    fit_to_budget,
)
from wxkf.kf.responder import Conversation

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def turn(i: int, text: str, speaker: Speaker = Speaker.CUSTOMER) -> Turn:
    return Turn(speaker, text, T0 + timedelta(minutes=i), msgid=f"m{i}")


def test_cjk_counts_one_token_per_character_and_latin_four_characters() -> None:
    assert estimate_tokens("退货要几天") == 5
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("订单 order 123") == 2 + 3  # 2 CJK + 10 other characters → 3
    assert estimate_tokens("") == 0


def test_keeps_the_newest_turns_that_fit_and_drops_older_ones() -> None:
    turns = [turn(i, "你好" * 10) for i in range(10)]  # 20 + overhead tokens each
    per_turn = 20 + TURN_OVERHEAD_TOKENS
    kept = fit_to_budget(turns, per_turn * 3 + 5)
    assert [t.msgid for t in kept] == ["m7", "m8", "m9"]
    assert sum(t.tokens for t in kept) <= per_turn * 3 + 5


def test_a_newest_turn_longer_than_the_budget_is_cut_not_dropped() -> None:
    kept = fit_to_budget([turn(0, "短"), turn(1, "很长的消息" * 100)], 50)
    assert len(kept) == 1
    assert kept[0].msgid == "m1"
    assert kept[0].text.startswith("很长的消息")
    assert kept[0].text.endswith("…")
    assert kept[0].tokens <= 50


def test_gaps_are_never_made_in_the_middle_of_a_conversation() -> None:
    turns = [turn(0, "早"), turn(1, "长" * 100), turn(2, "晚")]
    kept = fit_to_budget(turns, 40)
    assert [t.msgid for t in kept] == ["m2"]


class ListSource:
    def __init__(self, turns: list[Turn]) -> None:
        self.turns = turns

    async def recent_turns(self, conversation: Conversation, *, limit: int) -> list[Turn]:
        return self.turns[-limit:]


async def test_recall_leaves_out_the_messages_being_answered() -> None:
    source = ListSource([turn(0, "在吗"), turn(1, "在的", Speaker.BOT), turn(2, "怎么退货")])
    memory = ConversationMemory(source, budget_tokens=1000)
    kept = await memory.recall(Conversation("wk1", "wm1"), exclude_msgids={"m2"})
    assert [(t.speaker, t.text) for t in kept] == [(Speaker.CUSTOMER, "在吗"), (Speaker.BOT, "在的")]
