"""The simulator's rich side over real HTTP: every customer msgtype, media/get bytes and errors, menu
clicks, 升级服务, unknown APIs, sync_msg without open_kfid, and saving a callback URL."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from tests.conftest import serve_handler
from wxkf.kf.ledger import record_messages
from wxkf.simulator.samples import sample_amr, sample_png
from wxkf.simulator.testing import SimulatorControlError, SimulatorHandle
from wxkf.wecom.client import WeComClient
from wxkf.wecom.errors import APIError
from wxkf.wecom.models import SyncMsgResponse, UpgradeMember, UpgradeServiceRequest
from wxkf.wecom.tokens import MemoryTokenStore

BODIES: dict[str, dict[str, Any]] = {
    "location": {"latitude": 31.23, "longitude": 121.47, "name": "人民广场", "address": "上海市黄浦区"},
    "link": {
        "title": "订单详情",
        "desc": "点击查看",
        "url": "https://shop.example/o/1",
        "pic_url": "https://p",
    },
    "business_card": {"userid": "zhangsan"},
    "miniprogram": {"title": "商城", "appid": "wx123", "pagepath": "pages/i", "thumb_media_id": "t"},
    "channels_shop_product": {
        "product_id": "p1",
        "title": "茶具",
        "sales_price": "19900",
        "shop_nickname": "青禾",
    },
    "channels_shop_order": {
        "order_id": "o1",
        "product_titles": "茶具",
        "price_wording": "¥199",
        "state": "已发货",
    },
    "merged_msg": {
        "title": "聊天记录",
        "item": [{"sender_name": "小王", "msgtype": "text", "msg_content": "{}"}],
    },
    "channels": {"sub_type": 1, "nickname": "青禾", "title": "新品"},
}


def client(sim: SimulatorHandle) -> WeComClient:
    return WeComClient(sim.base_url, sim.corp_id, sim.kf_secret, token_store=MemoryTokenStore())


async def test_every_customer_msgtype_is_synced_and_recorded_raw(
    sim: SimulatorHandle, database_url: str
) -> None:
    import psycopg

    control = sim.control
    customer = sim.customers[0]
    control.send_text(customer, "你好")
    control.send_media(customer, "image", sample_png(), "a.png", "image/png")
    control.send_media(customer, "voice", sample_amr(0.4), "v.amr", "audio/amr")
    control.send_media(customer, "video", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 32, "v.mp4", "video/mp4")
    control.send_media(customer, "file", b"%PDF-1.4 fake", "invoice.pdf", "application/pdf")
    for msgtype, body in BODIES.items():
        control.send(customer, msgtype, body)
    control.send(customer, "hologram", {"shape": "cube"}, future=True)
    with pytest.raises(SimulatorControlError):
        control.send(customer, "hologram", {"shape": "cube"})  # only with `future`: typos stay errors
    async with client(sim) as wecom:
        page: SyncMsgResponse = await wecom.sync_msg(sim.open_kfid)
    types = [m.msgtype for m in page.msg_list]
    assert types == ["text", "image", "voice", "video", "file", *BODIES, "hologram"]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        result = await record_messages(conn, sim.open_kfid, page.msg_list)
        assert result.recorded == len(types)
        cur = await conn.execute("SELECT msgtype, body->'body' FROM kf_inbound ORDER BY id")
        rows = await cur.fetchall()
    assert rows[-1] == ("hologram", {"shape": "cube"})  # the unknown type, kept as WeCom sent it
    assert {str(t): b for t, b in rows}["location"] == BODIES["location"]


async def test_media_get_serves_the_bytes_and_wecoms_errors(sim: SimulatorHandle) -> None:
    png = sample_png()
    media_id = sim.control.upload_media("image", png, "parcel.png", "image/png")
    async with client(sim) as wecom:
        got = await wecom.download_media(media_id)
        assert (got.data, got.content_type, got.filename) == (png, "image/png", "parcel.png")
        with pytest.raises(APIError) as unknown:
            await wecom.download_media("no-such-id")
        assert unknown.value.errcode == 40007
        sim.control.advance(3 * 86400 + 1)  # wecom-api §8: media_id仅三天内有效
        with pytest.raises(APIError) as expired:
            await wecom.download_media(media_id)
        assert expired.value.errcode == 40007


async def test_media_with_a_chinese_file_name_is_served_and_named(sim: SimulatorHandle) -> None:
    """Chinese file names are the usual case: the header carries them percent-encoded, as HTTP allows."""
    media_id = sim.control.upload_media("file", b"%PDF-1.4 fake", "发票 <二月>.pdf", "application/pdf")
    async with client(sim) as wecom:
        got = await wecom.download_media(media_id)
    assert (got.data, got.filename) == (b"%PDF-1.4 fake", "发票 <二月>.pdf")


async def test_menu_clicks_come_back_as_text_with_menu_id(sim: SimulatorHandle) -> None:
    customer = sim.customers[0]
    sim.control.send_text(customer, "你好")
    menu = {
        "head_content": "请选择",
        "list": [{"type": "click", "click": {"id": "track", "content": "查物流"}}],
    }
    async with client(sim) as wecom:
        token = await wecom.access_token()
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        sent = await http.post(
            "/cgi-bin/kf/send_msg",
            params={"access_token": token},
            json={"touser": customer, "open_kfid": sim.open_kfid, "msgtype": "msgmenu", "msgmenu": menu},
        )
        assert sent.json()["errcode"] == 0
    item = sim.control.menu_click(customer, "track")
    assert item["text"] == {"content": "查物流", "menu_id": "track"}
    with pytest.raises(SimulatorControlError, match="no menu"):
        sim.control.menu_click(customer, "never-sent")


async def test_upgrade_service_and_its_config(sim: SimulatorHandle) -> None:
    customer = sim.customers[0]
    async with client(sim) as wecom:
        config = await wecom.get_upgrade_service_config()
        assert config.member_range.userid_list == ["zhangsan"]
        assert config.groupchat_range.chat_id_list == ["wrSimVipCustomerGroup001"]
        request = UpgradeServiceRequest(
            open_kfid=sim.open_kfid,
            external_userid=customer,
            type=1,
            member=UpgradeMember(userid="zhangsan", wording="我是您的专属顾问"),
        )
        await wecom.upgrade_service(request)
        assert sim.control.session(customer)["upgrade"]["member"]["userid"] == "zhangsan"
        with pytest.raises(APIError) as refused:
            await wecom.upgrade_service(request.model_copy(update={"member": UpgradeMember(userid="lisi")}))
        assert refused.value.errcode == 95021  # not configured in 升级服务
        await wecom.cancel_upgrade_service(sim.open_kfid, customer)
        assert sim.control.session(customer)["upgrade"] is None


async def test_an_unknown_api_answers_http_200_with_an_errcode(sim: SimulatorHandle) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        response = await http.post("/cgi-bin/kf/no_such_api", json={})
    assert response.status_code == 200
    assert response.json()["errcode"] == 48001
    assert "more info at" in response.json()["errmsg"]


async def test_sync_msg_without_open_kfid_as_older_revisions_allowed(sim: SimulatorHandle) -> None:
    second = sim.control.add_account("第二家店")
    customer = sim.customers[0]
    sim.control.send_text(customer, "一号店")
    sim.control.send_text(customer, "二号店", open_kfid=second)
    async with client(sim) as wecom:
        token = await wecom.access_token()
    async with httpx.AsyncClient(base_url=sim.base_url, params={"access_token": token}) as http:
        required = await http.post("/cgi-bin/kf/sync_msg", json={})
        assert required.json()["errcode"] == 95000  # the 2024 revision: open_kfid is required
        sim.control.set_behaviour(sync_msg_requires_open_kfid=False)
        first = (await http.post("/cgi-bin/kf/sync_msg", json={"limit": 1})).json()
        rest = (await http.post("/cgi-bin/kf/sync_msg", json={"cursor": first["next_cursor"]})).json()
    items = first["msg_list"] + rest["msg_list"]
    assert [(i["open_kfid"], i["text"]["content"]) for i in items] == [
        (sim.open_kfid, "一号店"),
        (second, "二号店"),
    ]
    assert (first["has_more"], rest["has_more"]) == (1, 0)


class WrongEcho(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'"not the echostr"'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


async def test_saving_a_callback_url_sends_the_url_verification_first(sim: SimulatorHandle) -> None:
    with (
        serve_handler(WrongEcho) as (url, _handler),
        pytest.raises(SimulatorControlError, match="回调地址请求不通过"),
    ):
        sim.control.save_callback_url(f"{url}/wecom/callback")
    assert sim.control.world()["callback_url"] is None  # not saved


async def test_a_message_that_is_not_utf_8_is_refused_and_the_account_still_syncs(
    sim: SimulatorHandle,
) -> None:
    """JSON allows a lone surrogate, UTF-8 does not: refused on arrival, never stored to break every sync."""
    response = httpx.post(
        f"{sim.base_url}/sim/customers/{sim.customers[0]}/messages",
        content=b'{"open_kfid": "%s", "msgtype": "text", "content": "\\ud83d"}' % sim.open_kfid.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code < 500
    assert response.json()["errcode"] == 40058
    sim.control.send_text(sim.customers[0], "你好")
    async with client(sim) as wecom:
        page: SyncMsgResponse = await wecom.sync_msg(sim.open_kfid)
    assert [m.msgtype for m in page.msg_list] == ["text"]
