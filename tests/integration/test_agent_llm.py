"""The LLM responder through the real `openai` SDK against the local fake OpenAI server.

Scripted replies, a tool round trip, 401, 429 then success, persistent 5xx, timeouts and malformed
JSON; failures and tool calls are checked in PostgreSQL.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg.rows import dict_row
from pydantic import SecretStr

from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.agent.llm import LLMAuthError, LLMClient
from wxkf.agent.memory import ConversationMemory, Speaker, Turn
from wxkf.agent.prompts import GREETING_TEXT, HANDOFF_TEXT, UNKNOWN_MARKER, UNKNOWN_TEXT
from wxkf.agent.responder import MAX_TOOL_ROUNDS, FailureLog, LLMResponder
from wxkf.agent.tools import Audience, ToolAudit, ToolContext, ToolRegistry
from wxkf.agent.tools_kf import kf_tools
from wxkf.db.engine import Database
from wxkf.kf.responder import Conversation, InboundMessage, ReplyRequest
from wxkf.simulator.testing import run_simulator
from wxkf.wecom.client import WeComClient
from wxkf.wecom.errors import error_for_errcode
from wxkf.wecom.models import CustomerBatchGetResponse, KfCustomer
from wxkf.wecom.tokens import MemoryTokenStore

KEY = "sk-test-0123456789"
CONVERSATION = Conversation("wkSHOP", "wmCUSTOMER")


@dataclass(frozen=True)
class FaqPassage:
    text: str
    source: str
    heading: str
    score: float
    relevant: bool = True


RETURNS = FaqPassage("退货：签收后 7 天内可无理由退货，运费由买家承担。", "shop_faq.md", "退换货", 0.9)


class KeywordRetriever:
    """Returns the passage when the query mentions 退货; nothing otherwise (below the threshold)."""

    async def search(
        self, query: str, k: int, *, collections: Sequence[str] | None = None
    ) -> list[FaqPassage]:
        return [RETURNS] if "退" in query else []


class RecordingKf:
    """A WeCom kf twin for the tools: remembers state moves, answers profiles."""

    def __init__(self, state: int = 1, servicer: str | None = None) -> None:
        self.state = state
        self.servicer = servicer
        self.moves: list[tuple[int, str | None]] = []

    async def get_service_state(self, open_kfid: str, external_userid: str) -> tuple[int, str | None]:
        return self.state, self.servicer

    async def trans_service_state(
        self, open_kfid: str, external_userid: str, service_state: int, servicer_userid: str | None = None
    ) -> str | None:
        if self.state == 4:
            raise error_for_errcode("kf/service_state/trans", 95016, "invalid service state transfer")
        self.moves.append((service_state, servicer_userid))
        self.state = service_state
        return "MSGCODE"

    async def batchget_customers(
        self, external_userids: list[str], need_enter_session_context: bool = False
    ) -> CustomerBatchGetResponse:
        return CustomerBatchGetResponse(
            errcode=0,
            errmsg="ok",
            customer_list=[
                KfCustomer(
                    external_userid=external_userids[0],
                    nickname="张三",
                    gender=1,
                    unionid="secret-union",
                    enter_session_context={"scene": "shop_page"},
                )
            ],
        )


class ListMemory:
    def __init__(self, turns: list[Turn]) -> None:
        self.turns = turns

    async def recent_turns(self, conversation: Conversation, *, limit: int) -> list[Turn]:
        return self.turns[-limit:]


def request(text_: str, budget: int = 3) -> ReplyRequest:
    message = InboundMessage("msg-now", "text", {"content": text_}, text_, datetime.now(UTC))
    return ReplyRequest(CONVERSATION, [message], remaining_budget=budget)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY, model="deepseek-chat") as server:
        yield server


def make_llm(fake: FakeOpenAI, *, key: str = KEY, timeout: float = 5.0, retries: int = 2) -> LLMClient:
    return LLMClient(
        base_url=fake.base_url,
        api_key=SecretStr(key),
        model="deepseek-chat",
        timeout_seconds=timeout,
        max_retries=retries,
    )


@pytest.fixture
def kf() -> RecordingKf:
    return RecordingKf()


@pytest.fixture
async def responder(fake: FakeOpenAI, database: Database, kf: RecordingKf) -> AsyncIterator[LLMResponder]:
    registry = ToolRegistry(ToolAudit(database))
    registry.extend(kf_tools(kf))
    agent = LLMResponder(
        make_llm(fake),
        retriever=KeywordRetriever(),
        memory=None,
        tools=registry,
        failures=FailureLog(database),
        persona="你是「小满杂货铺」的客服小满。",
    )
    yield agent
    await agent.aclose()


async def rows(database: Database, sql: str) -> list[Any]:
    async with database.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql)
        return await cur.fetchall()


async def test_a_scripted_reply_is_grounded_in_the_passage_and_told_the_budget(
    fake: FakeOpenAI, responder: LLMResponder
) -> None:
    fake.reply("您好，签收后 7 天内可以无理由退货（来源：shop_faq.md）。")
    reply = await responder.respond(request("怎么退货？", budget=3))

    assert reply.text == "您好，签收后 7 天内可以无理由退货（来源：shop_faq.md）。"
    assert reply.sources == ["shop_faq.md · 退换货"]
    assert not reply.handoff
    (sent,) = fake.chat_requests()
    assert sent.authorized
    assert sent.body["model"] == "deepseek-chat"
    system = sent.messages[0]["content"]
    assert system.startswith("你是「小满杂货铺」的客服小满。")
    assert "来源：shop_faq.md · 退换货" in system
    assert "7 天内可无理由退货" in system
    assert "最多可以发送 3 条消息" in system
    assert "2048 字节" in system
    assert sent.messages[-1] == {"role": "user", "content": "怎么退货？"}
    assert {t["function"]["name"] for t in sent.tools} == {"transfer_to_human", "customer_profile"}


async def test_with_nothing_retrieved_the_answer_is_dont_know_never_an_invented_one(
    fake: FakeOpenAI, responder: LLMResponder
) -> None:
    fake.reply(UNKNOWN_MARKER)  # what the prompt tells the model to answer when the passages are silent
    reply = await responder.respond(request("你们支持分期付款吗？"))
    system = fake.chat_requests()[0].messages[0]["content"]
    assert "检索结论：知识库中没有与客户问题相关的资料" in system
    assert f"只回复 {UNKNOWN_MARKER}" in system
    assert "资料：（无）" in system
    # KF_UNKNOWN_ANSWER=handoff (the default): a person, if one can receive; else the don't-know text.
    assert (reply.text, reply.handoff, reply.unattended_text) == (HANDOFF_TEXT, True, UNKNOWN_TEXT)
    assert reply.sources == []


async def test_with_say_the_silent_knowledge_base_answers_dont_know(
    fake: FakeOpenAI, database: Database
) -> None:
    agent = LLMResponder(
        make_llm(fake),
        retriever=KeywordRetriever(),
        memory=None,
        tools=ToolRegistry(),
        failures=FailureLog(database),
        unknown_answer="say",
    )
    fake.reply(f"{UNKNOWN_MARKER}")
    reply = await agent.respond(request("能开增值税专用发票吗"))
    await agent.aclose()
    assert (reply.text, reply.handoff) == (UNKNOWN_TEXT, False)


async def test_the_relevance_decision_reaches_the_prompt(fake: FakeOpenAI, database: Database) -> None:
    weak = FaqPassage("运费：满 99 元包邮。", "shop_faq.md", "运费", 0.4, relevant=False)

    class Mixed:
        async def search(
            self, query: str, k: int, *, collections: Sequence[str] | None = None
        ) -> list[FaqPassage]:
            return [RETURNS, weak]

    agent = LLMResponder(
        make_llm(fake), retriever=Mixed(), memory=None, tools=ToolRegistry(), failures=FailureLog(database)
    )
    fake.reply("签收后 7 天内可以退货。")
    reply = await agent.respond(request("怎么退货？"))
    await agent.aclose()
    system = fake.chat_requests()[0].messages[0]["content"]
    assert "知识库中有 1 段相关资料" in system
    assert "[1]（相关）来源：shop_faq.md · 退换货" in system
    assert "[2]（弱相关）来源：shop_faq.md · 运费" in system
    # What the model may cite to the customer is each passage's title, never the file it came from.
    assert "[1]（相关）来源：shop_faq.md · 退换货；标题：退换货\n" in system
    assert "注明资料的「标题」，不要写文件名或路径" in system
    assert reply.sources == ["shop_faq.md · 退换货"]


async def test_a_tool_call_is_executed_fed_back_and_audited(
    fake: FakeOpenAI, responder: LLMResponder, database: Database
) -> None:
    fake.tool_call("customer_profile", {})
    fake.reply("张三您好！有什么可以帮您？")
    reply = await responder.respond(request("在吗"))

    assert reply.text == "张三您好！有什么可以帮您？"
    _first, second = fake.chat_requests()
    call_id = second.messages[-2]["tool_calls"][0]["id"]
    tool_message = second.messages[-1]
    assert tool_message["role"] == "tool"
    assert tool_message["tool_call_id"] == call_id
    assert "张三" in tool_message["content"]
    assert "secret-union" not in tool_message["content"]
    (audit,) = await rows(database, "SELECT * FROM agent_tool_calls")
    assert audit["tool"] == "customer_profile"
    assert audit["status"] == "ok"
    assert audit["audience"] == "customer"
    assert audit["external_userid"] == "wmCUSTOMER"
    assert audit["arguments"] == {}
    assert audit["result"]["nickname"] == "张三"


async def test_transfer_during_a_reply_is_left_to_the_pipeline_after_the_text(
    fake: FakeOpenAI, responder: LLMResponder, kf: RecordingKf, database: Database
) -> None:
    fake.tool_call("transfer_to_human", {"reason": "客户投诉", "servicer_userid": "lisi"})
    fake.reply("好的，已为您转接人工客服李四。")
    reply = await responder.respond(request("我要投诉"))

    assert reply.text == "好的，已为您转接人工客服李四。"
    assert reply.handoff
    assert reply.handoff_servicer == "lisi"
    # wecom-api §4/§6: send_msg is refused in state 3, so the session must not move before the reply.
    assert kf.moves == []
    (audit,) = await rows(database, "SELECT * FROM agent_tool_calls")
    assert audit["arguments"] == {"reason": "客户投诉", "servicer_userid": "lisi"}
    assert audit["result"] == {"scheduled": True, "service_state": 3, "servicer_userid": "lisi"}


async def test_staff_tools_move_the_session_at_once(kf: RecordingKf, database: Database) -> None:
    registry = ToolRegistry(ToolAudit(database))
    registry.extend(kf_tools(kf))
    staff = ToolContext(audience=Audience.STAFF, conversation=CONVERSATION, actor="zhangsan")

    queued = await registry.call("transfer_to_human", '{"reason": "需要售后"}', staff)
    assert queued.status == "ok"
    assert kf.moves == [(2, None)]
    kf.state, kf.servicer = 3, "zhangsan"
    ended = await registry.call("end_session", "{}", staff)
    assert ended.status == "ok"
    assert kf.moves[-1] == (4, "zhangsan")
    again = await registry.call("end_session", "{}", staff)
    assert again.result == {"service_state": 4, "already_ended": True}
    customer = ToolContext(audience=Audience.CUSTOMER, conversation=CONVERSATION, reply_pending=True)
    refused = await registry.call("end_session", "{}", customer)
    assert refused.status == "unknown"  # customers' conversations cannot end themselves

    audits = await rows(database, "SELECT tool, status, actor FROM agent_tool_calls ORDER BY id")
    assert [(a["tool"], a["status"]) for a in audits] == [
        ("transfer_to_human", "ok"),
        ("end_session", "ok"),
        ("end_session", "ok"),
        ("end_session", "unknown"),
    ]
    assert audits[0]["actor"] == "zhangsan"


async def test_a_wecom_error_in_a_tool_is_reported_to_the_model_and_audited(
    kf: RecordingKf, database: Database
) -> None:
    registry = ToolRegistry(ToolAudit(database))
    registry.extend(kf_tools(kf))
    kf.state = 4
    staff = ToolContext(audience=Audience.STAFF, conversation=CONVERSATION)
    outcome = await registry.call("transfer_to_human", '{"reason": "x"}', staff)
    assert outcome.status == "error"
    assert "95016" in outcome.result["error"]
    (audit,) = await rows(database, "SELECT status, error FROM agent_tool_calls")
    assert audit["status"] == "error"
    assert "95016" in audit["error"]


async def test_bad_tool_calls_are_audited_and_the_conversation_goes_on(
    fake: FakeOpenAI, responder: LLMResponder, database: Database
) -> None:
    fake.tool_call("customer_profile", "{not json")
    fake.tool_call("drop_database", {})
    fake.tool_call("transfer_to_human", {"servicer_userid": "lisi"})  # reason is required
    fake.reply("您好！")
    reply = await responder.respond(request("你好"))

    assert reply.text == "您好！"
    assert not reply.handoff
    audits = await rows(database, "SELECT tool, status, arguments FROM agent_tool_calls ORDER BY id")
    assert [(a["tool"], a["status"]) for a in audits] == [
        ("customer_profile", "invalid"),
        ("drop_database", "unknown"),
        ("transfer_to_human", "invalid"),
    ]
    assert audits[0]["arguments"] == {"_raw": "{not json"}
    assert "reason" in fake.chat_requests()[3].messages[-1]["content"]


async def test_the_tool_loop_is_bounded(fake: FakeOpenAI, responder: LLMResponder) -> None:
    for _ in range(MAX_TOOL_ROUNDS):
        fake.tool_call("customer_profile", {})
    fake.reply("好的。")
    reply = await responder.respond(request("你好"))

    assert reply.text == "好的。"
    chats = fake.chat_requests()
    assert len(chats) == MAX_TOOL_ROUNDS + 1
    assert chats[-1].body["tool_choice"] == "none"
    assert all(c.body["tool_choice"] == "auto" for c in chats[:-1])


async def test_an_empty_answer_is_the_knowledge_bases_answer_or_an_honest_handoff(
    fake: FakeOpenAI, responder: LLMResponder
) -> None:
    """An empty completion (a reasoning model's, a content filter's) is no answer, not "I don't know":
    the customer gets what the knowledge base holds, and a person only when it holds nothing."""
    fake.reply("")
    known = await responder.respond(request("怎么退货？"))
    assert "7 天内" in known.text
    assert known.sources == ["shop_faq.md · 退换货"]
    assert not known.handoff
    fake.reply("")
    unknown = await responder.respond(request("你们支持分期付款吗？"))
    assert unknown.text == HANDOFF_TEXT
    assert unknown.handoff


async def test_401_gives_the_troubleshooting_advice_without_the_key(fake: FakeOpenAI) -> None:
    llm = make_llm(fake, key="sk-wrong-key-42")
    with pytest.raises(LLMAuthError) as caught:
        await llm.complete([{"role": "user", "content": "hi"}])
    await llm.aclose()
    message = str(caught.value)
    assert message.startswith("大模型认证失败（HTTP 401）")
    for hint in ("LLM_API_KEY", "DEEPSEEK_API_KEY", "账户状态", "account status"):
        assert hint in message
    assert "sk-wrong-key-42" not in message
    assert len(fake.chat_requests()) == 1  # 401 is not retried


async def test_401_in_a_conversation_gives_the_fallback_and_records_it(
    fake: FakeOpenAI, database: Database
) -> None:
    failures = FailureLog(database)
    agent = LLMResponder(
        make_llm(fake, key="sk-wrong"),
        retriever=KeywordRetriever(),
        memory=None,
        tools=ToolRegistry(),
        failures=failures,
    )
    reply = await agent.respond(request("怎么退货？"))
    await agent.aclose()
    # A wrong key costs the customer nothing the knowledge base knows: the offline answer.
    assert "7 天内可无理由退货" in reply.text
    assert reply.sources == ["shop_faq.md · 退换货"]
    assert not reply.handoff
    (failure,) = await rows(
        database, "SELECT kind, status_code, detail, external_userid FROM agent_llm_failures"
    )
    assert failure["kind"] == "auth"
    assert failure["status_code"] == 401
    assert "DEEPSEEK_API_KEY" in failure["detail"]
    assert failure["external_userid"] == "wmCUSTOMER"
    assert failures.counts["auth"] == 1


async def test_429_is_retried_then_answered(
    fake: FakeOpenAI, responder: LLMResponder, database: Database
) -> None:
    fake.error(429, "Rate limit reached")
    fake.reply("您好！")
    reply = await responder.respond(request("你好"))
    assert reply.text == "您好！"
    assert len(fake.chat_requests()) == 2
    assert await rows(database, "SELECT * FROM agent_llm_failures") == []


async def test_persistent_5xx_gives_the_fallback_after_bounded_retries(
    fake: FakeOpenAI, responder: LLMResponder, database: Database
) -> None:
    for _ in range(5):
        fake.error(503, "Service Unavailable")
    reply = await responder.respond(request("怎么退货？"))

    assert "7 天内可无理由退货" in reply.text
    assert not reply.handoff
    assert len(fake.chat_requests()) == 3  # the first attempt and LLM_MAX_RETRIES=2 retries
    (failure,) = await rows(database, "SELECT kind, status_code, model FROM agent_llm_failures")
    assert dict(failure) == {"kind": "server", "status_code": 503, "model": "deepseek-chat"}
    (counter,) = await rows(
        database, "SELECT name, value FROM kf_counters WHERE name LIKE 'agent.llm_failure.%'"
    )
    assert dict(counter) == {"name": "agent.llm_failure.server", "value": 1}


async def test_timeouts_give_the_fallback_and_are_recorded(fake: FakeOpenAI, database: Database) -> None:
    fake.slow(30)
    fake.slow(30)
    agent = LLMResponder(
        make_llm(fake, timeout=0.3, retries=1),
        retriever=KeywordRetriever(),
        memory=None,
        tools=ToolRegistry(),
        failures=FailureLog(database),
    )
    reply = await agent.respond(request("运费怎么算"))  # the knowledge base has nothing on it
    await agent.aclose()
    assert (reply.text, reply.handoff, reply.unattended_text) == (HANDOFF_TEXT, True, UNKNOWN_TEXT)
    assert len(fake.chat_requests()) == 2
    (failure,) = await rows(database, "SELECT kind FROM agent_llm_failures")
    assert failure["kind"] == "timeout"


@pytest.mark.parametrize("body", [b'{"id": "x", "choices": [', b'{"unexpected": true}', b"<html>502</html>"])
async def test_malformed_answers_give_the_fallback(
    fake: FakeOpenAI, responder: LLMResponder, database: Database, body: bytes
) -> None:
    fake.malformed(body)
    reply = await responder.respond(request("你好"))
    assert reply.text == GREETING_TEXT  # the offline answer
    (failure,) = await rows(database, "SELECT kind FROM agent_llm_failures")
    assert failure["kind"] == "malformed"


async def test_memory_goes_into_the_prompt_in_order_within_the_budget(
    fake: FakeOpenAI, database: Database
) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    old = [Turn(Speaker.CUSTOMER, "很久以前的问题" * 50, at, "old")]
    recent = [
        Turn(Speaker.CUSTOMER, "我买的杯子碎了", at, "a"),
        Turn(Speaker.BOT, "很抱歉！请提供订单号。", at, "b"),
        Turn(Speaker.SERVICER, "已为您登记补发。", at, "c", servicer_userid="lisi"),
        Turn(Speaker.CUSTOMER, "怎么退货？", at, "msg-now"),  # being answered now: not repeated
    ]
    memory = ConversationMemory(ListMemory(old + recent), budget_tokens=60)
    agent = LLMResponder(
        make_llm(fake), retriever=None, memory=memory, tools=ToolRegistry(), failures=FailureLog(database)
    )
    fake.reply("好的")
    await agent.respond(request("怎么退货？"))
    await agent.aclose()
    messages = fake.chat_requests()[0].messages
    assert messages[1:] == [
        {"role": "user", "content": "我买的杯子碎了"},
        {"role": "assistant", "content": "很抱歉！请提供订单号。"},
        {"role": "assistant", "content": "（人工客服 lisi）已为您登记补发。"},
        {"role": "user", "content": "怎么退货？"},
    ]


async def test_kf_tools_drive_the_real_client_against_the_simulator(database: Database) -> None:
    async with run_simulator() as sim:
        customer = sim.control.add_customer(nickname="王小满")
        sim.control.send_text(customer, "我要找人工")  # wecom-api §11: the session starts (state 0)
        async with WeComClient(
            sim.base_url, sim.corp_id, sim.kf_secret, token_store=MemoryTokenStore()
        ) as wecom:
            registry = ToolRegistry(ToolAudit(database))
            registry.extend(kf_tools(wecom))
            staff = ToolContext(audience=Audience.STAFF, conversation=Conversation(sim.open_kfid, customer))

            profile = await registry.call("customer_profile", "{}", staff)
            assert profile.result["nickname"] == "王小满"
            servicer = sim.servicers[0]
            moved = await registry.call(
                "transfer_to_human", json.dumps({"reason": "客户要求", "servicer_userid": servicer}), staff
            )
            assert moved.status == "ok"
            assert sim.control.session(customer)["service_state"] == 3
            ended = await registry.call("end_session", "{}", staff)
            assert ended.status == "ok"
            assert ended.result["servicer_userid"] == servicer
            assert sim.control.session(customer)["service_state"] == 4

    audits = await rows(database, "SELECT tool, status FROM agent_tool_calls ORDER BY id")
    assert [(a["tool"], a["status"]) for a in audits] == [
        ("customer_profile", "ok"),
        ("transfer_to_human", "ok"),
        ("end_session", "ok"),
    ]


async def test_after_a_timeout_the_knowledge_base_answers_at_once_until_the_llm_rests(
    fake: FakeOpenAI, database: Database
) -> None:
    """An LLM that hangs cost every customer LLM_TIMEOUT_SECONDS × the attempts (93 s at the defaults),
    even after /ready said it was degraded. After a timeout it rests: the next customers get the
    knowledge base's answer with no call, and after the rest it is asked again."""
    agent = LLMResponder(
        make_llm(fake, timeout=0.5, retries=0),
        retriever=KeywordRetriever(),
        memory=None,
        tools=ToolRegistry(ToolAudit(database)),
        failures=FailureLog(database),
        rest_seconds=60.0,
    )
    try:
        fake.slow(5)
        first = await agent.respond(request("怎么退货？"))
        assert "7 天内" in first.text  # the knowledge base's answer, after the one timeout
        calls = len(fake.chat_requests())
        started = time.monotonic()
        second = await agent.respond(request("怎么退货？"))
        assert "7 天内" in second.text
        assert len(fake.chat_requests()) == calls  # not asked while it rests
        assert time.monotonic() - started < 0.4
        agent.rest_seconds = 0.0  # the rest is over: asked again
        fake.reply("签收后 7 天内可退。")
        third = await agent.respond(request("怎么退货？"))
        assert third.text == "签收后 7 天内可退。"
    finally:
        await agent.aclose()
