"""The responders on the real knowledge base (bundled sample FAQ) and the pipeline's ledgers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.agent.kb.bundled import load_sample
from wxkf.agent.kb.embedders import HashingEmbedder
from wxkf.agent.kb.store import KnowledgeBase
from wxkf.agent.memory import PipelineMemory, Speaker
from wxkf.agent.prompts import (
    ACK_TEXT,
    GREETING_TEXT,
    HANDOFF_TEXT,
    THANKS_TEXT,
    TRANSFER_TEXT,
    UNKNOWN_TEXT,
)
from wxkf.agent.responder import LLMResponder, OfflineResponder, build_responder
from wxkf.config import Settings
from wxkf.db.engine import Database
from wxkf.kf.responder import Conversation, InboundMessage, ReplyRequest

CONVERSATION = Conversation("wkSHOP", "wmCUSTOMER")


def request(text_: str, msgid: str = "now") -> ReplyRequest:
    message = InboundMessage(msgid, "text", {"content": text_}, text_, datetime.now(UTC))
    return ReplyRequest(CONVERSATION, [message], remaining_budget=5)


@pytest.fixture
async def kb(database: Database) -> KnowledgeBase:
    knowledge = KnowledgeBase(database, HashingEmbedder())
    await load_sample(knowledge)
    return knowledge


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-demo") as server:
        yield server


async def test_offline_answers_a_known_question_from_the_faq_with_its_source(kb: KnowledgeBase) -> None:
    reply = await OfflineResponder(kb).respond(request("运费怎么算？"))
    assert "满 99 元包邮" in reply.text
    assert not reply.handoff
    assert reply.sources
    assert reply.sources[0].startswith("sample/shop_faq.md")  # staff read the source in the ledger
    assert reply.text.endswith("（来源：青禾生活馆 常见问题 › 配送与物流 › 运费怎么算？）")
    assert "shop_faq" not in reply.text


async def test_the_customer_reads_the_documents_title_never_the_servers_file_path(
    database: Database, tmp_path: Path
) -> None:
    faq = tmp_path / "stranger" / "faq.md"
    faq.parent.mkdir()
    faq.write_text(
        "# 小鹿咖啡 常见问题\n\n## 营业时间\n\n每天 8:00–22:00 营业，节假日照常。\n", encoding="utf-8"
    )
    notes = tmp_path / "价目说明.txt"  # a document without headings is named by its title, not its path
    notes.write_text("美式咖啡 18 元，拿铁 22 元，燕麦奶加 3 元。", encoding="utf-8")
    kb = KnowledgeBase(database, HashingEmbedder())
    await kb.add_documents([faq, notes])
    hours = await OfflineResponder(kb).respond(request("营业时间"))
    assert hours.text.endswith("（来源：小鹿咖啡 常见问题 › 营业时间）")
    prices = await OfflineResponder(kb).respond(request("拿铁多少钱"))
    assert prices.text.endswith("（来源：价目说明）")
    for reply in (hours, prices):
        assert str(tmp_path) not in reply.text
        assert "source" not in reply.text
        assert reply.sources[0].startswith(str(tmp_path))  # the ledger keeps the path for staff


@pytest.mark.parametrize("greeting", ["你好", "您好！", "在吗？", "hello"])
async def test_offline_greets_a_greeting_instead_of_queueing_it_for_a_person(
    kb: KnowledgeBase, greeting: str
) -> None:
    reply = await OfflineResponder(kb).respond(request(greeting))
    assert reply.text == GREETING_TEXT
    assert not reply.handoff


@pytest.mark.parametrize("asking", ["帮我转人工客服", "人工", "人工！", "我要人工", "找真人"])
async def test_offline_transfers_a_customer_who_asks_for_a_person(kb: KnowledgeBase, asking: str) -> None:
    # 「人工」 alone is what UNKNOWN_TEXT tells the customer to reply.
    assert "「人工」" in UNKNOWN_TEXT
    reply = await OfflineResponder(kb).respond(request(asking))
    assert reply.text == TRANSFER_TEXT
    assert reply.handoff


@pytest.mark.parametrize("asking", ["人工智能客服靠谱吗", "人工费怎么算"])
async def test_a_question_that_only_contains_人工_is_a_question(kb: KnowledgeBase, asking: str) -> None:
    reply = await OfflineResponder(kb).respond(request(asking))
    assert reply.text != TRANSFER_TEXT


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("谢谢", THANKS_TEXT),
        ("谢谢你！", THANKS_TEXT),
        ("多谢了", THANKS_TEXT),
        ("thanks", THANKS_TEXT),
        ("好的", ACK_TEXT),
        ("嗯嗯", ACK_TEXT),
        ("收到", ACK_TEXT),
        ("再见", ACK_TEXT),
        ("ok", ACK_TEXT),
    ],
)
async def test_a_thanks_or_an_ok_is_acknowledged_not_queued_for_a_person(
    kb: KnowledgeBase, said: str, expected: str
) -> None:
    """After an answer, 谢谢 handed the customer to the human pool, where the bot no longer answers
    their next question; and it was listed among the console's unanswered questions."""
    reply = await OfflineResponder(kb).respond(request(said))
    assert reply.text == expected
    assert not reply.handoff
    assert not reply.question  # nothing for the unanswered list


async def test_thanks_with_a_question_is_a_question(kb: KnowledgeBase) -> None:
    reply = await OfflineResponder(kb).respond(request("谢谢，那运费怎么算？"))
    assert "满 99 元包邮" in reply.text


async def test_offline_hands_an_unknown_question_to_a_person(kb: KnowledgeBase) -> None:
    reply = await OfflineResponder(kb).respond(request("你们老板最喜欢哪支足球队？"))
    assert reply.text == HANDOFF_TEXT
    assert reply.handoff
    assert reply.sources == []


async def test_without_a_key_the_factory_builds_the_offline_responder(
    settings_factory: Callable[..., Settings], database: Database, kb: KnowledgeBase
) -> None:
    responder = build_responder(settings_factory(kb_embedder="hashing"), database)
    assert isinstance(responder, OfflineResponder)
    reply = await responder.respond(request("一般多久发货？"))
    await responder.aclose()
    assert "48 小时内发货" in reply.text


async def test_the_factory_s_knowledge_base_answers_at_kb_min_relevance(
    settings_factory: Callable[..., Settings], database: Database, kb: KnowledgeBase
) -> None:
    """KB_MIN_RELEVANCE reaches the knowledge base the service answers from: above every passage's
    score, a question the FAQ answers goes to a person."""
    responder = build_responder(settings_factory(kb_embedder="hashing", kb_min_relevance=2), database)
    reply = await responder.respond(request("一般多久发货？"))
    await responder.aclose()
    assert reply.text == HANDOFF_TEXT
    assert reply.handoff


async def test_with_a_key_the_factory_builds_the_llm_responder_on_the_knowledge_base(
    settings_factory: Callable[..., Settings], database: Database, kb: KnowledgeBase, fake: FakeOpenAI
) -> None:
    settings = settings_factory(
        deepseek_api_key="sk-demo",
        llm_base_url=fake.base_url,
        llm_persona="你是青禾小助手。",
        kb_embedder="hashing",
    )
    responder = build_responder(settings, database)
    assert isinstance(responder, LLMResponder)
    fake.reply("满 99 元包邮哦。")
    reply = await responder.respond(request("运费怎么算？"))
    await responder.aclose()

    assert reply.text == "满 99 元包邮哦。"
    (sent,) = fake.chat_requests()
    assert sent.body["model"] == "deepseek-chat"
    system = sent.messages[0]["content"]
    assert system.startswith("你是青禾小助手。")
    assert "满 99 元包邮" in system
    assert "sample/shop_faq.md" in system


async def insert(database: Database, table: str, **row: Any) -> None:
    columns = ", ".join(row)
    values = ", ".join(f"%({c})s" for c in row)
    async with database.pool.connection() as conn:
        await conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({values})", row)


async def test_pipeline_memory_reads_customer_servicer_and_bot_turns_in_order(database: Database) -> None:
    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    base = {"open_kfid": "wkSHOP", "external_userid": "wmCUSTOMER"}

    async def inbound(msgid: str, origin: int, minute: int, body: dict[str, Any], **extra: Any) -> None:
        msgtype = next(k for k in body if k not in ("msgid",))
        await insert(
            database,
            "kf_inbound",
            **{**base, **extra},
            msgid=msgid,
            origin=origin,
            msgtype=msgtype,
            send_time=t0 + timedelta(minutes=minute),
            body=json.dumps({"msgid": msgid, **body}, ensure_ascii=False),
        )

    await inbound("c1", 3, 0, {"text": {"content": "杯子碎了"}})
    await insert(
        database,
        "kf_outbox",
        **base,
        msgid="r1_1",
        kind="reply",
        msgtype="text",
        body=json.dumps({"content": "很抱歉，请发订单号。"}, ensure_ascii=False),
        status="sent",
        sent_at=t0 + timedelta(minutes=1),
    )
    await inbound("c2", 3, 2, {"image": {"media_id": "MEDIA"}})
    await inbound("s1", 5, 3, {"text": {"content": "已补发"}}, servicer_userid="lisi")
    await inbound("e1", 4, 4, {"event": {"event_type": "session_status_change"}})
    await insert(  # not sent yet: not part of what the customer saw
        database, "kf_outbox", **base, msgid="r2_1", kind="reply", msgtype="text", body='{"content": "待发"}'
    )
    await inbound("other", 3, 5, {"text": {"content": "别人的消息"}}, external_userid="wmOTHER")

    turns = await PipelineMemory(database).recent_turns(CONVERSATION, limit=10)
    assert [(t.speaker, t.text, t.msgid) for t in turns] == [
        (Speaker.CUSTOMER, "杯子碎了", "c1"),
        (Speaker.BOT, "很抱歉，请发订单号。", "r1_1"),
        (Speaker.CUSTOMER, "[图片 image]", "c2"),
        (Speaker.SERVICER, "已补发", "s1"),
    ]
    assert turns[-1].servicer_userid == "lisi"
    latest = await PipelineMemory(database).recent_turns(CONVERSATION, limit=2)
    assert [t.msgid for t in latest] == ["c2", "s1"]
