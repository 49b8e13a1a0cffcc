"""Every client method against a local fake WeCom over real HTTP: request shapes and typed answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.integration.client_fake_server import (
    CORP_ID,
    KFID,
    MEDIA_BYTES,
    SECRET,
    USER,
    FakeWeCom,
    Reply,
    serve,
    wecom_error,
)
from wxkf.wecom.client import RetryPolicy, WeComClient
from wxkf.wecom.errors import (
    InvalidArgumentError,
    InvalidRequestError,
    MalformedResponseError,
    SessionStateError,
)
from wxkf.wecom.models import (
    AddMsgTemplateRequest,
    CaLink,
    GetGroupMsgListV2Request,
    Link,
    Location,
    Media,
    MenuClick,
    MenuItem,
    MenuMiniProgram,
    MenuText,
    MenuView,
    MiniProgram,
    MsgMenu,
    SendMsgRequest,
    TemplateAttachment,
    TemplateImage,
    TemplateLink,
    Text,
)
from wxkf.wecom.tokens import MemoryTokenStore


@pytest.fixture
def fake() -> Iterator[FakeWeCom]:
    with serve(FakeWeCom()) as running:
        yield running


@pytest.fixture
async def client(fake: FakeWeCom) -> AsyncIterator[WeComClient]:
    async with WeComClient(
        fake.base_url, CORP_ID, SECRET, token_store=MemoryTokenStore(), retry=RetryPolicy(base_delay=0.001)
    ) as wecom:
        yield wecom


def last_json(fake: FakeWeCom, path: str) -> Any:
    return fake.calls_to(path)[-1].json


async def test_sync_msg_types_items_and_keeps_bodies(client: WeComClient, fake: FakeWeCom) -> None:
    page = await client.sync_msg(
        KFID, cursor="CURSOR1", token="ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR"
    )

    # wecom-api §3: open_kfid, cursor, token, limit (default and max 1000)
    assert last_json(fake, "/cgi-bin/kf/sync_msg") == {
        "open_kfid": KFID,
        "cursor": "CURSOR1",
        "token": "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR",
        "limit": 1000,
    }
    assert (page.next_cursor, page.has_more) == ("4gw7MepFLfgF2VC5npN", 1)
    text, image, event = page.msg_list
    assert (text.msgtype, text.origin, text.body) == ("text", 3, {"content": "你好", "menu_id": "101"})
    assert text.external_userid == USER
    assert text.send_time == 1615478585
    assert (image.servicer_userid, image.body["media_id"]) == (
        "Zhangsan",
        "2iSLeVyqzk4eX0IB5kTi9Ljfa2rt9dwfq5WKRQ4Nvvgw",
    )
    assert event.open_kfid is None
    assert event.event is not None
    assert (event.event.event_type, event.event.welcome_code, event.event.open_kfid) == (
        "enter_session",
        "aaaaaa",
        KFID,
    )
    assert event.event.model_extra == {"wechat_channels": {"nickname": "进入会话的视频号名称", "scene": 1}}


async def test_sync_msg_without_cursor_or_token_sends_neither(client: WeComClient, fake: FakeWeCom) -> None:
    await client.sync_msg(KFID, limit=10)
    assert last_json(fake, "/cgi-bin/kf/sync_msg") == {"open_kfid": KFID, "limit": 10}


MENU = MsgMenu(
    head_content="您对本次服务是否满意呢? ",
    items=[
        MenuItem(type="click", click=MenuClick(id="101", content="满意")),
        MenuItem(type="view", view=MenuView(url="https://example.com", content="查看")),
        MenuItem(
            type="miniprogram",
            miniprogram=MenuMiniProgram(appid="wx123", pagepath="pages/index", content="小程序"),
        ),
        MenuItem(type="text", text=MenuText(content="纯文本")),
    ],
    tail_content="欢迎再次光临",
)
SEND_CASES: list[tuple[SendMsgRequest, dict[str, Any]]] = [
    (
        SendMsgRequest(
            touser=USER, open_kfid=KFID, msgid="MSGID1", msgtype="text", text=Text(content="你好")
        ),
        {"text": {"content": "你好"}, "msgid": "MSGID1"},
    ),
    *(
        (
            SendMsgRequest(touser=USER, open_kfid=KFID, msgtype=kind, **{kind: Media(media_id="MEDIA_ID")}),
            {kind: {"media_id": "MEDIA_ID"}},
        )
        for kind in ("image", "voice", "video", "file")
    ),
    (
        SendMsgRequest(
            touser=USER,
            open_kfid=KFID,
            msgtype="link",
            link=Link(title="标题", desc="描述", url="https://work.weixin.qq.com", thumb_media_id="THUMB"),
        ),
        {
            "link": {
                "title": "标题",
                "desc": "描述",
                "url": "https://work.weixin.qq.com",
                "thumb_media_id": "THUMB",
            }
        },
    ),
    (
        SendMsgRequest(
            touser=USER,
            open_kfid=KFID,
            msgtype="miniprogram",
            miniprogram=MiniProgram(
                appid="APPID", title="欢迎报名", thumb_media_id="MEDIA_ID", pagepath="PAGE_PATH"
            ),
        ),
        {
            "miniprogram": {
                "appid": "APPID",
                "title": "欢迎报名",
                "thumb_media_id": "MEDIA_ID",
                "pagepath": "PAGE_PATH",
            }
        },
    ),
    (
        SendMsgRequest(touser=USER, open_kfid=KFID, msgtype="msgmenu", msgmenu=MENU),
        {
            "msgmenu": {
                "head_content": "您对本次服务是否满意呢? ",
                "list": [
                    {"type": "click", "click": {"id": "101", "content": "满意"}},
                    {"type": "view", "view": {"url": "https://example.com", "content": "查看"}},
                    {
                        "type": "miniprogram",
                        "miniprogram": {"appid": "wx123", "pagepath": "pages/index", "content": "小程序"},
                    },
                    {"type": "text", "text": {"content": "纯文本"}},
                ],
                "tail_content": "欢迎再次光临",
            }
        },
    ),
    (
        SendMsgRequest(
            touser=USER,
            open_kfid=KFID,
            msgtype="location",
            location=Location(latitude=23.1, longitude=113.3, name="广州", address="天河区"),
        ),
        {"location": {"latitude": 23.1, "longitude": 113.3, "name": "广州", "address": "天河区"}},
    ),
    (
        SendMsgRequest(
            touser=USER, open_kfid=KFID, msgtype="ca_link", ca_link=CaLink(link_url="https://wecom.work/ca/x")
        ),
        {"ca_link": {"link_url": "https://wecom.work/ca/x"}},
    ),
]


@pytest.mark.parametrize(("request_", "body"), SEND_CASES, ids=[case[0].msgtype for case in SEND_CASES])
async def test_send_msg_serialises_each_msgtype_as_documented(
    client: WeComClient, fake: FakeWeCom, request_: SendMsgRequest, body: dict[str, Any]
) -> None:
    response = await client.send_msg(request_)

    # wecom-api §4: touser, open_kfid, msgid?, msgtype, and the body under the msgtype key only
    assert last_json(fake, "/cgi-bin/kf/send_msg") == {
        "touser": USER,
        "open_kfid": KFID,
        "msgtype": request_.msgtype,
        **body,
    }
    assert response.msgid == "MSG_ID_generated"


async def test_send_text_and_its_errors(client: WeComClient, fake: FakeWeCom) -> None:
    await client.send_text(KFID, USER, "在的", msgid="reply-1")
    assert last_json(fake, "/cgi-bin/kf/send_msg") == {
        "touser": USER,
        "open_kfid": KFID,
        "msgid": "reply-1",
        "msgtype": "text",
        "text": {"content": "在的"},
    }

    fake.script("/cgi-bin/kf/send_msg", wecom_error(95018, "send msg session status invalid"))
    with pytest.raises(SessionStateError) as caught:
        await client.send_text(KFID, USER, "在的")
    assert (caught.value.errcode, caught.value.api, caught.value.from_ip) == (
        95018,
        "kf/send_msg",
        "9.30.0.138",
    )


async def test_send_msg_on_event_text_and_menu(client: WeComClient, fake: FakeWeCom) -> None:
    response = await client.send_msg_on_event("WELCOME_CODE", Text(content="欢迎咨询"), msgid="welcome-1")
    assert response.msgid == "MSG_ID_event"
    assert last_json(fake, "/cgi-bin/kf/send_msg_on_event") == {
        "code": "WELCOME_CODE",
        "msgid": "welcome-1",
        "msgtype": "text",
        "text": {"content": "欢迎咨询"},
    }
    await client.send_msg_on_event("END_CODE", MsgMenu(head_content="评价", items=[MENU.items[0]]))
    sent = last_json(fake, "/cgi-bin/kf/send_msg_on_event")
    assert sent["msgtype"] == "msgmenu"
    assert sent["msgmenu"] == {
        "head_content": "评价",
        "list": [{"type": "click", "click": {"id": "101", "content": "满意"}}],
    }


async def test_service_state_get_and_trans(client: WeComClient, fake: FakeWeCom) -> None:
    assert await client.get_service_state(KFID, USER) == (3, "zhangsan")
    assert last_json(fake, "/cgi-bin/kf/service_state/get") == {"open_kfid": KFID, "external_userid": USER}

    assert await client.trans_service_state(KFID, USER, 3, "zhangsan") == "MSG_CODE"
    assert last_json(fake, "/cgi-bin/kf/service_state/trans") == {
        "open_kfid": KFID,
        "external_userid": USER,
        "service_state": 3,
        "servicer_userid": "zhangsan",
    }
    fake.script("/cgi-bin/kf/service_state/trans", {"errcode": 0, "errmsg": "ok"})
    assert await client.trans_service_state(KFID, USER, 1) is None
    assert last_json(fake, "/cgi-bin/kf/service_state/trans") == {
        "open_kfid": KFID,
        "external_userid": USER,
        "service_state": 1,
    }
    fake.script(
        "/cgi-bin/kf/service_state/get",
        {"errcode": 0, "errmsg": "ok", "service_state": 1, "servicer_userid": ""},
    )
    assert await client.get_service_state(KFID, USER) == (1, None)


async def test_accounts_servicers_customers_contact_way(client: WeComClient, fake: FakeWeCom) -> None:
    accounts = await client.list_accounts(0, 50)
    assert last_json(fake, "/cgi-bin/kf/account/list") == {"offset": 0, "limit": 50}
    assert [(a.open_kfid, a.name, a.manage_privilege) for a in accounts.account_list] == [
        (KFID, "咨询客服", False)
    ]

    servicers = await client.list_servicers(KFID)
    call = fake.calls_to("/cgi-bin/kf/servicer/list")[-1]
    assert (call.method, call.params["open_kfid"]) == ("GET", KFID)  # wecom-api §8: a GET
    assert [(s.userid, s.department_id, s.status) for s in servicers.servicer_list] == [
        ("zhangsan", None, 0),
        (None, 2, None),
    ]

    customers = await client.batchget_customers(
        ["wmxxxxxxxxxxxxxxxxxxxxxx", "zhangsan"], need_enter_session_context=True
    )
    assert last_json(fake, "/cgi-bin/kf/customer/batchget") == {
        "external_userid_list": ["wmxxxxxxxxxxxxxxxxxxxxxx", "zhangsan"],
        "need_enter_session_context": 1,
    }
    assert customers.customer_list[0].nickname == "张三"
    assert customers.customer_list[0].enter_session_context == {
        "scene": "123",
        "scene_param": "abc",
        "wechat_channels": {},
    }
    assert customers.invalid_external_userid == ["zhangsan"]

    way = await client.add_contact_way(KFID, "spring_sale-1")
    assert last_json(fake, "/cgi-bin/kf/add_contact_way") == {"open_kfid": KFID, "scene": "spring_sale-1"}
    assert way.url.startswith("https://work.weixin.qq.com/kf/")


async def test_media_upload_multipart_and_download(client: WeComClient, fake: FakeWeCom) -> None:
    uploaded = await client.upload_media("image", "头像.png", b"\x89PNG-image-bytes")
    call = fake.calls_to("/cgi-bin/media/upload")[-1]
    assert call.params["type"] == "image"
    assert call.files == {
        "media": ("头像.png", b"\x89PNG-image-bytes", "image/png")
    }  # wecom-api §8: field `media`
    assert (uploaded.media_id, uploaded.created_at) == (
        "1G6nrLmr5EC3MMb_-zK1dDdzmd0p7cNliYu9V5w7o8K0",
        1380000000,
    )

    assert await client.get_media("MEDIA_ID") == MEDIA_BYTES
    assert fake.calls_to("/cgi-bin/media/get")[-1].params["media_id"] == "MEDIA_ID"

    # wecom-api §8: an error comes back as JSON instead of the file
    fake.script(
        "/cgi-bin/media/get",
        Reply({"errcode": 40007, "errmsg": "invalid media_id"}, content_type="text/plain"),
    )
    with pytest.raises(InvalidRequestError) as caught:
        await client.get_media("GONE")
    assert caught.value.errcode == 40007
    fake.script("/cgi-bin/media/get", {"errcode": 0, "errmsg": "ok"})
    with pytest.raises(MalformedResponseError, match="expected file bytes"):
        await client.get_media("ODD")


async def test_app_message(client: WeComClient, fake: FakeWeCom) -> None:
    result = await client.send_app_message(1000002, "zhangsan|lisi", "客户张三需要人工")
    assert last_json(fake, "/cgi-bin/message/send") == {
        "touser": "zhangsan|lisi",
        "msgtype": "text",
        "agentid": 1000002,
        "text": {"content": "客户张三需要人工"},
    }
    assert result.invaliduser == "userid3"


async def test_external_contacts(client: WeComClient, fake: FakeWeCom) -> None:
    listed = await client.list_external_contacts("rocky")
    call = fake.calls_to("/cgi-bin/externalcontact/list")[-1]
    assert (call.method, call.params["userid"]) == ("GET", "rocky")
    assert len(listed.external_userid) == 2

    contact = await client.get_external_contact("woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA", cursor="C1")
    call = fake.calls_to("/cgi-bin/externalcontact/get")[-1]
    assert (call.params["external_userid"], call.params["cursor"]) == (
        "woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA",
        "C1",
    )
    assert (contact.external_contact.name, contact.external_contact.type) == ("李四", 2)
    follow = contact.follow_user[0]
    assert (follow.userid, follow.add_way, follow.tags[0].tag_id, contact.next_cursor) == (
        "rocky",
        1,
        "etAAA",
        "NEXT_CURSOR",
    )


async def test_msg_template_and_group_messages(client: WeComClient, fake: FakeWeCom) -> None:
    request = AddMsgTemplateRequest(
        external_userid=["woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA"],
        sender="zhangsan",
        text=Text(content="新品到货"),
        attachments=[
            TemplateAttachment(msgtype="image", image=TemplateImage(media_id="MEDIA_ID")),
            TemplateAttachment(
                msgtype="link", link=TemplateLink(title="消息标题", url="https://example.link.com/path")
            ),
        ],
    )
    created = await client.add_msg_template(request)
    assert last_json(fake, "/cgi-bin/externalcontact/add_msg_template") == {
        "chat_type": "single",
        "external_userid": ["woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA"],
        "sender": "zhangsan",
        "text": {"content": "新品到货"},
        "attachments": [
            {"msgtype": "image", "image": {"media_id": "MEDIA_ID"}},
            {"msgtype": "link", "link": {"title": "消息标题", "url": "https://example.link.com/path"}},
        ],
    }
    assert (created.msgid, created.fail_list) == (
        "msgGCAAAXtWyujaWJHDDGi0mAAAA",
        ["wmqfasd1e1927831123109rBAAAA"],
    )

    listing = await client.get_groupmsg_list_v2(
        GetGroupMsgListV2Request(chat_type="single", start_time=1605171726, end_time=1605172726, limit=50)
    )
    assert last_json(fake, "/cgi-bin/externalcontact/get_groupmsg_list_v2") == {
        "chat_type": "single",
        "start_time": 1605171726,
        "end_time": 1605172726,
        "limit": 50,
    }
    assert listing.group_msg_list[0].create_time == 1605171726

    tasks = await client.get_groupmsg_task(created.msgid, limit=1000, cursor="C")
    assert last_json(fake, "/cgi-bin/externalcontact/get_groupmsg_task") == {
        "msgid": created.msgid,
        "limit": 1000,
        "cursor": "C",
    }
    assert tasks.task_list[0].userid == "zhangsan"

    results = await client.get_groupmsg_send_result(created.msgid, "zhangsan", limit=100)
    assert last_json(fake, "/cgi-bin/externalcontact/get_groupmsg_send_result") == {
        "msgid": created.msgid,
        "userid": "zhangsan",
        "limit": 100,
    }
    assert (results.send_list[0].external_userid, results.send_list[0].status) == (
        "wmqfasd1e19278asdasAAAA",
        1,
    )

    await client.remind_groupmsg_send(created.msgid)
    await client.cancel_groupmsg_send(created.msgid)
    assert last_json(fake, "/cgi-bin/externalcontact/remind_groupmsg_send") == {"msgid": created.msgid}
    assert last_json(fake, "/cgi-bin/externalcontact/cancel_groupmsg_send") == {"msgid": created.msgid}

    fake.script("/cgi-bin/externalcontact/remind_groupmsg_send", wecom_error(41094, "remind too frequently"))
    with pytest.raises(InvalidRequestError, match="41094"):
        await client.remind_groupmsg_send(created.msgid)


async def test_limits_are_refused_before_sending(client: WeComClient, fake: FakeWeCom) -> None:
    too_long = "字" * 683  # 2049 bytes in UTF-8: wecom-api §4 counts bytes
    cases: list[Any] = [
        client.send_text(KFID, USER, too_long),
        client.send_text(KFID, USER, "hi", msgid="bad id!"),
        client.send_text(KFID, USER, "hi", msgid="x" * 33),
        client.send_msg(
            SendMsgRequest(
                touser=USER,
                open_kfid=KFID,
                msgtype="msgmenu",
                msgmenu=MsgMenu(items=[MENU.items[0]] * 11),
            )
        ),
        client.send_msg(SendMsgRequest(touser=USER, open_kfid=KFID, msgtype="image", text=Text(content="x"))),
        client.add_msg_template(AddMsgTemplateRequest(sender="zhangsan", text=Text(content="字" * 1334))),
        client.add_msg_template(
            AddMsgTemplateRequest(
                sender="zhangsan",
                attachments=[TemplateAttachment(msgtype="video", video=Media(media_id="M"))] * 10,
            )
        ),
        client.add_msg_template(AddMsgTemplateRequest(sender="zhangsan")),
        client.trans_service_state(KFID, USER, 3),
        client.batchget_customers([]),
        client.add_contact_way(KFID, "有中文"),
        client.upload_media("image", "a.png", b"tiny"),
        client.sync_msg(KFID, limit=1001),
    ]
    fields = []
    for call in cases:
        with pytest.raises(InvalidArgumentError) as caught:
            await call
        fields.append(caught.value.field)
    assert fields == [
        "text.content",
        "msgid",
        "msgid",
        "msgmenu.list",
        "image",
        "text.content",
        "attachments",
        "text",
        "servicer_userid",
        "external_userid_list",
        "scene",
        "len(data)",
        "limit",
    ]
    assert fake.calls == []  # nothing reached WeCom, not even gettoken
    # The exact limits pass.
    await client.send_text(KFID, USER, "字" * 682 + "ab")
    await client.add_msg_template(
        AddMsgTemplateRequest(
            sender="zhangsan",
            text=Text(content="字" * 1333 + "a"),
            attachments=[TemplateAttachment(msgtype="file", file=Media(media_id="M"))] * 9,
        )
    )
