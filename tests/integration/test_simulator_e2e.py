"""End to end over real HTTP with wxkf's own WeCom client and callback crypto against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from wxkf.simulator.testing import SimulatorHandle
from wxkf.wecom.client import RetryPolicy, WeComClient
from wxkf.wecom.errors import RateLimitedError, SendLimitError, SessionStateError
from wxkf.wecom.models import AddMsgTemplateRequest, Text
from wxkf.wecom.tokens import MemoryTokenStore

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, deadline=10)


@pytest.fixture
async def wecom(sim: SimulatorHandle) -> AsyncIterator[WeComClient]:
    async with WeComClient(
        sim.base_url, sim.corp_id, sim.kf_secret, token_store=MemoryTokenStore(), retry=FAST_RETRY
    ) as client:
        yield client


async def test_customer_message_to_callback_to_sync_to_reply(
    sim: SimulatorHandle, wecom: WeComClient
) -> None:
    """wecom-api §1.5/§2/§3/§4: the callback decrypts with CallbackCrypto, its Token pulls the
    message with sync_msg, and a reply reaches the customer."""
    import uvicorn

    events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    crypto = sim.crypto()
    receiver = FastAPI()

    @receiver.post("/wecom/callback")
    async def callback(request: Request) -> PlainTextResponse:
        q = request.query_params
        events.put_nowait(
            crypto.decrypt_callback(q["msg_signature"], q["timestamp"], q["nonce"], await request.body())
        )
        return PlainTextResponse("success")

    server = uvicorn.Server(
        uvicorn.Config(receiver, host="127.0.0.1", port=0, log_level="warning", ws="none")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers no startup event; poll its flag
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        await asyncio.to_thread(sim.control.set_callback_url, f"http://127.0.0.1:{port}/wecom/callback")
        customer = sim.customers[0]
        await asyncio.to_thread(sim.control.send_text, customer, "请问营业时间？")
        event = await asyncio.wait_for(events.get(), timeout=10)
        assert event["OpenKfId"] == sim.open_kfid
        page = await wecom.sync_msg(sim.open_kfid, token=event["Token"])
        assert [m.external_userid for m in page.msg_list] == [customer]
        await wecom.send_text(sim.open_kfid, customer, "9:00-18:00")
        received = await asyncio.to_thread(sim.control.received, customer)
        assert [r["text"]["content"] for r in received] == ["9:00-18:00"]
    finally:
        server.should_exit = True
        await serving


async def test_state_3_returns_95018_through_the_client(sim: SimulatorHandle, wecom: WeComClient) -> None:
    """wecom-api §4: a session taken by a servicer (人工接待, state 3) refuses API sends with 95018."""
    customer = sim.customers[0]
    await asyncio.to_thread(sim.control.set_routing, "human_first")
    await asyncio.to_thread(sim.control.send_text, customer, "转人工")
    assert (await wecom.get_service_state(sim.open_kfid, customer))[0] == 3
    with pytest.raises(SessionStateError) as info:
        await wecom.send_text(sim.open_kfid, customer, "您好")
    assert info.value.errcode == 95018


async def test_sixth_message_returns_95001_through_the_client(
    sim: SimulatorHandle, wecom: WeComClient
) -> None:
    """wecom-api §4: five messages per customer message; the sixth is 95001."""
    customer = sim.customers[1]
    await asyncio.to_thread(sim.control.send_text, customer, "你好")
    for n in range(5):
        await wecom.send_text(sim.open_kfid, customer, f"第{n + 1}条")
    with pytest.raises(SendLimitError) as info:
        await wecom.send_text(sim.open_kfid, customer, "第6条")
    assert info.value.errcode == 95001


async def test_invalidated_token_returns_42001_and_the_client_recovers(
    sim: SimulatorHandle, wecom: WeComClient
) -> None:
    """wecom-api §7.4: a token revoked early answers 42001; the client refetches and retries once."""
    customer = sim.customers[2]
    await wecom.get_service_state(sim.open_kfid, customer)
    assert await asyncio.to_thread(sim.control.invalidate_tokens) == 1
    assert (await wecom.get_service_state(sim.open_kfid, customer))[0] == 4
    calls = await asyncio.to_thread(sim.control.calls)
    assert [(c["api"], c["errcode"]) for c in calls] == [
        ("gettoken", 0),
        ("kf/service_state/get", 0),
        ("kf/service_state/get", 42001),
        ("gettoken", 0),
        ("kf/service_state/get", 0),
    ]


async def test_injected_45009_is_retried_then_raised(sim: SimulatorHandle, wecom: WeComClient) -> None:
    """wecom-api §7.2/§10: 45009 once is absorbed by the client's retry; always-45009 surfaces."""
    customer = sim.customers[0]
    await asyncio.to_thread(sim.control.add_fault, "kf/service_state/get", errcode=45009, times=1)
    assert (await wecom.get_service_state(sim.open_kfid, customer))[0] == 4
    await asyncio.to_thread(sim.control.add_fault, "kf/service_state/get", errcode=45009)
    with pytest.raises(RateLimitedError):
        await wecom.get_service_state(sim.open_kfid, customer)


async def test_contact_apis_through_the_client(sim: SimulatorHandle) -> None:
    """wecom-api §9: the client's customer-contact calls parse the simulator's answers."""
    async with WeComClient(
        sim.base_url, sim.corp_id, sim.contact_secret, token_store=MemoryTokenStore(), retry=FAST_RETRY
    ) as contact:
        listed = await contact.list_external_contacts(sim.member)
        assert listed.external_userid == sim.external_contacts
        created = await contact.add_msg_template(
            AddMsgTemplateRequest(sender=sim.member, text=Text(content="到货提醒"))
        )
        assert created.fail_list == []
        await asyncio.to_thread(sim.control.confirm_group_msg, created.msgid, sim.member)
        task = await contact.get_groupmsg_task(created.msgid)
        assert [t.status for t in task.task_list] == [2]
