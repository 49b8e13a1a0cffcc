"""Customer contact end to end: the service over real HTTP against the simulator, real PostgreSQL.

Tasks are confirmed through the simulator's control API, as a member would in WeCom (wecom-api §9).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from wxkf.contact.content import MessageContent, attachment
from wxkf.contact.errors import (
    AlreadyCancelledError,
    AlreadySentError,
    ContactError,
    InvalidMessageError,
    NothingToCancelError,
    ReceiveCapError,
    ReminderLimitError,
)
from wxkf.contact.service import ContactService, open_contact_service
from wxkf.db.engine import Database
from wxkf.simulator.testing import SimulatorControlError, SimulatorHandle
from wxkf.wecom.errors import APIError
from wxkf.wecom.models import AddMsgTemplateRequest, Text


@pytest.fixture
async def service(
    sim: SimulatorHandle, settings_factory: Any, database: Database
) -> AsyncIterator[ContactService]:
    settings = settings_factory(**sim.settings_overrides())
    async with open_contact_service(settings, database) as service:
        yield service


def _calls(sim: SimulatorHandle, api: str) -> int:
    return len(sim.control.calls(api))


async def test_customers_are_listed_with_details_and_cached(
    sim: SimulatorHandle, service: ContactService
) -> None:
    page = await service.customers(sim.member)
    assert page.total == 2
    assert [c.external_userid for c in page.customers] == sim.external_contacts
    assert {c.name for c in page.customers} == {"联系人1", "联系人2"}
    assert _calls(sim, "externalcontact/list") == 1

    again = await service.customers(sim.member, page=2, page_size=1)
    assert [c.external_userid for c in again.customers] == sim.external_contacts[1:]
    assert again.pages == 2
    assert _calls(sim, "externalcontact/list") == 1  # from the PostgreSQL cache
    assert _calls(sim, "externalcontact/get") == 2

    await service.customers(sim.member, refresh=True)
    assert _calls(sim, "externalcontact/list") == 2


async def test_single_send_confirmed_then_second_send_refused_by_the_cap(
    sim: SimulatorHandle, service: ContactService
) -> None:
    customer = sim.external_contacts[0]
    created = await service.send(sim.member, customer, MessageContent("新品到货，欢迎咨询"))
    assert created.recipients == [customer]
    assert created.fail_list == []
    # The member is told by app message that a task awaits confirmation.
    assert created.notified
    [note] = sim.control.app_messages(sim.member)
    assert "群发助手" in note["text"]["content"]

    before = await service.status(created.msgid)
    assert [(m.userid, m.status) for m in before.members] == [(sim.member, 0)]
    assert [c.status for c in before.customers] == [0]

    assert sim.control.confirm_group_msg(created.msgid, sim.member)["sent"] == 1
    after = await service.status(created.msgid)
    assert [(m.userid, m.status) for m in after.members] == [(sim.member, 2)]
    [outcome] = after.customers
    assert (outcome.external_userid, outcome.status) == (customer, 1)
    assert "已发送" in outcome.explanation
    assert [m["text"]["content"] for m in sim.control.received(customer)] == ["新品到货，欢迎咨询"]
    # wecom-api §7.4: the 客户联系 secret and the app secret each have their own cached token.
    async with service.database.pool.connection() as conn:
        cached = await (await conn.execute("SELECT count(*) FROM wecom_access_tokens")).fetchone()
    assert cached == (2,)
    assert len(sim.control.calls("gettoken")) == 2

    templates = _calls(sim, "externalcontact/add_msg_template")
    with pytest.raises(ReceiveCapError) as refused:
        await service.send(sim.member, customer, MessageContent("再发一条"))
    message = str(refused.value)
    assert customer in message
    assert "起可再接收" in message
    assert "can receive again from" in message
    [capped] = refused.value.capped
    assert outcome.send_time is not None
    assert capped.next_at > outcome.send_time
    assert _calls(sim, "externalcontact/add_msg_template") == templates  # WeCom was never asked


async def test_broadcast_reports_non_contacts_in_fail_list_and_skips_capped(
    sim: SimulatorHandle, service: ContactService
) -> None:
    first, second = sim.external_contacts
    stranger = sim.customers[0]  # a kf customer, not wangwu's contact
    content = MessageContent("周末活动", (attachment("link", title="活动详情", url="https://example.com/a"),))
    created = await service.broadcast(sim.member, [first, stranger], content)
    assert created.fail_list == [stranger]
    assert created.recipients == [first]

    sim.control.confirm_group_msg(created.msgid, sim.member)
    status = await service.status(created.msgid)
    assert {c.external_userid: c.status for c in status.customers} == {first: 1}

    # Next broadcast to everyone: `first` is at the cap (1/day) and is skipped and reported.
    again = await service.broadcast(sim.member, None, MessageContent("第二条"))
    assert again.recipients == [second]
    assert [c.external_userid for c in again.capped] == [first]

    listed = await service.tasks()
    assert {t.msgid for t in listed} >= {created.msgid, again.msgid}
    assert all(t.local for t in listed if t.msgid in {created.msgid, again.msgid})

    # A range that ends before it starts is the caller's mistake, said as such, not an empty list.
    now = datetime.now(UTC)
    with pytest.raises(ContactError, match="开始时间须早于结束时间") as backwards:
        await service.tasks(start=now + timedelta(days=1), end=now)
    shanghai = (now + timedelta(days=1)).astimezone(ZoneInfo("Asia/Shanghai"))
    assert f"{shanghai:%Y-%m-%d %H:%M} CST ≥" in str(backwards.value)  # CONTACT_TIMEZONE, labelled


async def test_failures_at_wecom_are_reported_per_customer(
    sim: SimulatorHandle, settings_factory: Any, database: Database
) -> None:
    # Locally 7 per week; the simulated corp keeps 1 per day, so WeCom refuses the second (status 3).
    settings = settings_factory(
        **sim.settings_overrides(), contact_receive_cap_period="week", contact_receive_cap_count=7
    )
    first, second = sim.external_contacts
    async with open_contact_service(settings, database) as service:
        one = await service.broadcast(sim.member, [first], MessageContent("一"))
        sim.control.confirm_group_msg(one.msgid, sim.member)
        two = await service.broadcast(sim.member, [first, second], MessageContent("二"))
        sim.control.remove_contact(sim.member, second)  # the customer deleted the member meanwhile
        sim.control.confirm_group_msg(two.msgid, sim.member)
        status = await service.status(two.msgid)
        assert {f.external_userid: f.status for f in status.failures} == {first: 3, second: 2}
        assert "接收上限" in status.failures[0].explanation or "接收上限" in status.failures[1].explanation
        # Neither failure counts against the local cap.
        assert await service.ledger.received_in_period(second) == 0
        assert await service.ledger.received_in_period(first) == 1


async def test_remind_three_times_then_refused_locally_and_cancel_frees_the_cap(
    sim: SimulatorHandle, service: ContactService
) -> None:
    customer = sim.external_contacts[0]
    created = await service.send(sim.member, customer, MessageContent("提醒测试"))
    assert [await service.remind(created.msgid) for _ in range(3)] == [2, 1, 0]
    with pytest.raises(ReminderLimitError, match="3") as limited:
        await service.remind(created.msgid)
    assert _calls(sim, "externalcontact/remind_groupmsg_send") == 3  # the fourth never left
    # The next possible reminder, in CONTACT_TIMEZONE and the receive-cap error's format, both languages.
    assert limited.value.next_at is not None
    shown = f"{limited.value.next_at.astimezone(ZoneInfo('Asia/Shanghai')):%Y-%m-%d %H:%M} CST"
    message = str(limited.value)
    assert f"{shown} 后可再提醒" in message
    assert f"after {shown}" in message
    assert "UTC" not in message
    assert "+00:00" not in message

    cancelled = await service.cancel(created.msgid)
    assert (cancelled.stopped, cancelled.sent, cancelled.freed) == (1, 0, 1)
    assert await service.ledger.received_in_period(customer) == 0
    assert (await service.status(created.msgid)).cancelled
    again = await service.send(sim.member, customer, MessageContent("取消后重发"))
    assert again.recipients == [customer]


async def test_bad_message_is_refused_before_anything_is_reserved(
    sim: SimulatorHandle, service: ContactService
) -> None:
    customer = sim.external_contacts[0]
    with pytest.raises(InvalidMessageError, match="4000"):
        await service.send(sim.member, customer, MessageContent("长" * 2000))
    assert _calls(sim, "externalcontact/add_msg_template") == 0
    assert await service.ledger.received_in_period(customer) == 0


async def test_a_task_wecom_refuses_frees_the_reserved_slot(
    sim: SimulatorHandle, service: ContactService
) -> None:
    customer = sim.external_contacts[0]
    sim.control.add_fault("externalcontact/add_msg_template", errcode=41048, times=1)
    with pytest.raises(APIError) as refused:
        await service.send(sim.member, customer, MessageContent("你好"))
    assert refused.value.errcode == 41048
    assert await service.ledger.received_in_period(customer) == 0
    assert (await service.send(sim.member, customer, MessageContent("你好"))).recipients == [customer]


async def test_a_task_every_member_already_sent_is_not_reminded(
    sim: SimulatorHandle, service: ContactService
) -> None:
    customer = sim.external_contacts[0]
    created = await service.send(sim.member, customer, MessageContent("已发送的任务"))
    sim.control.confirm_group_msg(created.msgid, sim.member)
    with pytest.raises(AlreadySentError, match="全部发送"):
        await service.remind(created.msgid)
    assert _calls(sim, "externalcontact/remind_groupmsg_send") == 0


async def test_a_task_every_member_already_sent_is_not_cancelled(
    sim: SimulatorHandle, service: ContactService
) -> None:
    customer = sim.external_contacts[0]
    created = await service.send(sim.member, customer, MessageContent("已发送，不能取消"))
    sim.control.confirm_group_msg(created.msgid, sim.member)
    with pytest.raises(NothingToCancelError, match="成员已发送，无法取消") as refused:
        await service.cancel(created.msgid)
    assert "nothing to cancel" in str(refused.value)
    assert _calls(sim, "externalcontact/cancel_groupmsg_send") == 0
    # The customer received it: it still counts against the cap, and the task is not marked cancelled.
    assert await service.ledger.received_in_period(customer) == 1
    assert not (await service.status(created.msgid)).cancelled


async def test_cancel_stops_only_the_members_who_have_not_sent(
    sim: SimulatorHandle, service: ContactService
) -> None:
    # A task created outside this service, without a sender: each customer goes to their own member.
    first = sim.external_contacts[0]
    other = sim.control.add_customer("李四的客户")
    sim.control.add_contact("lisi", other)
    created = await service.contact.add_msg_template(
        AddMsgTemplateRequest(external_userid=[first, other], text=Text(content="两位成员的任务"))
    )
    sim.control.confirm_group_msg(created.msgid, sim.member)
    outcome = await service.cancel(created.msgid)
    assert (outcome.stopped, outcome.sent) == (1, 1)
    assert _calls(sim, "externalcontact/cancel_groupmsg_send") == 1
    # lisi's part is stopped at WeCom: confirming it now is refused (41093 群发任务已取消).
    with pytest.raises(SimulatorControlError, match="41093"):
        sim.control.confirm_group_msg(created.msgid, "lisi")


async def test_a_task_wecom_already_cancelled_is_said_so_and_freed(
    sim: SimulatorHandle, service: ContactService
) -> None:
    customer = sim.external_contacts[0]
    created = await service.send(sim.member, customer, MessageContent("已取消过"))
    sim.control.add_fault("externalcontact/cancel_groupmsg_send", errcode=41093, times=1)
    with pytest.raises(AlreadyCancelledError, match="已取消过") as refused:
        await service.cancel(created.msgid)
    assert "41093" in str(refused.value)
    assert await service.ledger.received_in_period(customer) == 0
    assert (await service.status(created.msgid)).cancelled
