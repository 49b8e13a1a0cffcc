"""The contact tools driven by an LLM (real `openai` SDK, local fake server) against the simulator.

The model lists the member's customers, previews a message, and — only in a later turn, after the
member said yes — creates the task with the confirmation token; every call lands in the audit.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import SecretStr

from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.agent.llm import LLMClient
from wxkf.agent.tools import Audience, ToolAudit, ToolContext, ToolError
from wxkf.contact.assistant import StaffAssistant
from wxkf.contact.service import ContactService, open_contact_service
from wxkf.contact.tools import BroadcastCustomerMessage, ContactTools, ListMyCustomers, SendCustomerMessage
from wxkf.db.engine import Database
from wxkf.simulator.testing import SimulatorHandle


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-test") as server:
        yield server


@pytest.fixture
async def service(
    sim: SimulatorHandle, settings_factory: Any, database: Database
) -> AsyncIterator[ContactService]:
    settings = settings_factory(**sim.settings_overrides(), contact_staff_userids=f"{sim.member},lisi")
    async with open_contact_service(settings, database) as service:
        yield service


@pytest.fixture
async def assistant(
    fake: FakeOpenAI, service: ContactService, database: Database
) -> AsyncIterator[StaffAssistant]:
    llm = LLMClient(base_url=fake.base_url, api_key=SecretStr("sk-test"), model="fake-model", max_retries=0)
    yield StaffAssistant(llm, ContactTools(service), ToolAudit(database))
    await llm.aclose()


def _last_tool_result(fake: FakeOpenAI) -> dict[str, Any]:
    tool_messages = [m for m in fake.chat_requests()[-1].messages if m["role"] == "tool"]
    result: dict[str, Any] = json.loads(tool_messages[-1]["content"])
    return result


async def test_llm_lists_customers_then_creates_a_task_only_after_confirmation(
    fake: FakeOpenAI, sim: SimulatorHandle, assistant: StaffAssistant, database: Database
) -> None:
    member, customer = sim.member, sim.external_contacts[0]
    history: list[ChatCompletionMessageParam] = []

    fake.tool_call("list_my_customers", {})
    fake.reply("你有 2 位客户：联系人1、联系人2。")
    assert "2 位客户" in await assistant.ask(member, history, "我有哪些客户？")
    listed = _last_tool_result(fake)
    assert {c["name"] for c in listed["customers"]} == {"联系人1", "联系人2"}
    offered = {t["function"]["name"] for t in fake.chat_requests()[0].tools}
    assert offered == {
        "list_my_customers",
        "send_customer_message",
        "broadcast_customer_message",
        "customer_message_status",
    }

    # Turn 2: the model previews; the fake then echoes the member's words as the answer.
    fake.tool_call("send_customer_message", {"external_userid": customer, "text": "本周六店庆，全场八折"})
    await assistant.ask(member, history, "给联系人1发：本周六店庆，全场八折")
    preview = _last_tool_result(fake)
    assert preview["status"] == "needs_confirmation"
    assert "本周六店庆" in preview["preview"]
    token = preview["confirmation_token"]

    # Turn 3: the member said yes; the model confirms with the token (and a different text, ignored).
    fake.tool_call(
        "send_customer_message", {"external_userid": customer, "text": "x", "confirmation_token": token}
    )
    fake.reply("好的")
    context_turn = await assistant.ask(
        member, history, "先别发"
    )  # a confirm in a turn that is not the preview's
    assert context_turn == "好的"
    # That call was a later turn, so it is allowed by the tool — and it sent the *stored* text, not "x".
    created = _last_tool_result(fake)
    assert created["status"] == "created"
    assert created["member_notified"] is True
    sim.control.confirm_group_msg(created["msgid"], member)
    assert [m["text"]["content"] for m in sim.control.received(customer)] == ["本周六店庆，全场八折"]

    # Status through the LLM tool.
    fake.tool_call("customer_message_status", {"msgid": created["msgid"]})
    fake.reply("已发送。")
    await assistant.ask(member, history, "发出去了吗？")
    status = _last_tool_result(fake)
    assert status["failures"] == []
    assert list(status["customers_by_status"].values()) == [1]

    async with database.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT tool, status FROM agent_tool_calls WHERE actor = %s ORDER BY id", (member,)
        )
        audited = [(r[0], r[1]) for r in await cur.fetchall()]
    assert audited == [
        ("list_my_customers", "ok"),
        ("send_customer_message", "ok"),
        ("send_customer_message", "ok"),
        ("customer_message_status", "ok"),
    ]


async def test_token_is_single_use_and_same_turn_confirmation_is_refused(
    sim: SimulatorHandle, service: ContactService
) -> None:
    tools = ContactTools(service)
    member, customer = sim.member, sim.external_contacts[1]
    turn = ToolContext(audience=Audience.STAFF, actor=member)
    preview = await tools.send_customer_message(
        turn, SendCustomerMessage(external_userid=customer, text="你好")
    )
    token = preview["confirmation_token"]
    with pytest.raises(ToolError, match="预览"):
        await tools.send_customer_message(
            turn, SendCustomerMessage(external_userid=customer, text="你好", confirmation_token=token)
        )
    assert sim.control.calls("externalcontact/add_msg_template") == []

    next_turn = ToolContext(audience=Audience.STAFF, actor=member)
    other_member = ToolContext(audience=Audience.STAFF, actor="lisi")
    with pytest.raises(ToolError, match="token"):
        await tools.send_customer_message(
            other_member, SendCustomerMessage(external_userid=customer, text="你好", confirmation_token=token)
        )
    done = await tools.send_customer_message(
        next_turn, SendCustomerMessage(external_userid=customer, text="你好", confirmation_token=token)
    )
    assert done["status"] == "created"
    with pytest.raises(ToolError, match="token"):
        await tools.send_customer_message(
            ToolContext(audience=Audience.STAFF, actor=member),
            SendCustomerMessage(external_userid=customer, text="你好", confirmation_token=token),
        )


async def test_sending_tools_are_not_offered_outside_the_allow_list_or_to_customers(
    sim: SimulatorHandle, service: ContactService
) -> None:
    tools = ContactTools(service)
    assert {t.name for t in tools.tools_for_member("zhangsan")} == {
        "list_my_customers",
        "customer_message_status",
    }
    assert all(t.audiences == frozenset({Audience.STAFF}) for t in tools.tools())
    with pytest.raises(ToolError, match="CONTACT_STAFF_USERIDS"):
        await tools.broadcast_customer_message(
            ToolContext(audience=Audience.STAFF, actor="zhangsan"),
            BroadcastCustomerMessage(all_customers=True, text="hi"),
        )
    with pytest.raises(ToolError, match="staff"):
        await tools.list_my_customers(ToolContext(audience=Audience.CUSTOMER), ListMyCustomers())
    # A customer that is not the member's own is refused at preview time.
    with pytest.raises(ToolError, match="not your customers"):
        await tools.broadcast_customer_message(
            ToolContext(audience=Audience.STAFF, actor=sim.member),
            BroadcastCustomerMessage(external_userids=[sim.customers[0]], text="hi"),
        )
