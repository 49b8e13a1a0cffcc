"""Media rules without I/O: S3 request signing (AWS's published vectors), outbound body checks,
renderings of every inbound type, and what the responders may search."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

import pytest

from wxkf.kf.inbound import render_text, searchable_text
from wxkf.kf.outbox import check_outbound
from wxkf.media.storage import sigv4_headers
from wxkf.wecom.errors import InvalidArgumentError

EMPTY = hashlib.sha256(b"").hexdigest()


def test_sigv4_matches_aws_get_vanilla_vector() -> None:
    headers = sigv4_headers(
        "GET",
        "https://example.amazonaws.com/",
        region="us-east-1",
        access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        payload_sha256=EMPTY,
        now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
        service="service",
    )
    assert headers["Authorization"].endswith(
        "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


def test_sigv4_matches_aws_s3_get_object_example() -> None:
    headers = sigv4_headers(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        region="us-east-1",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        payload_sha256=EMPTY,
        now=datetime(2013, 5, 24, tzinfo=UTC),
        headers={"Range": "bytes=0-9"},
    )
    assert headers["Authorization"].endswith(
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


@pytest.mark.parametrize(
    ("msgtype", "body", "field"),
    [
        ("link", {"title": "T" * 129, "url": "https://x", "thumb_media": {"sha256": "a"}}, "link.title"),
        ("link", {"title": "T", "url": "ftp://x", "thumb_media": {"sha256": "a"}}, "link.url"),
        ("link", {"title": "T", "desc": "说" * 171, "url": "https://x", "thumb_media_id": "m"}, "link.desc"),
        (
            "miniprogram",
            {"appid": "wx1", "title": "标" * 22, "pagepath": "/p", "thumb_media_id": "m"},
            "miniprogram.title",
        ),
        ("msgmenu", {"list": [{"type": "click", "click": {"id": "a", "content": "x"}}] * 11}, "msgmenu.list"),
        (
            "msgmenu",
            {"list": [{"type": "view", "view": {"url": "", "content": "x"}}]},
            "msgmenu.list[0].view.url",
        ),
        ("location", {"latitude": 91, "longitude": 0}, "location.latitude"),
        ("text", {"content": "字" * 683}, "text.content"),
        ("image", {}, "image.media_id"),
        ("video", {"media_id": ""}, "video.media_id"),
    ],
)
def test_an_outbound_body_over_wecoms_limits_is_refused_naming_the_field(
    msgtype: str, body: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_outbound(msgtype, body)
    assert caught.value.field == field
    assert re.match(r"[\u3400-\u9fff「]", caught.value.message), caught.value.message  # Chinese first


def test_bodies_within_the_limits_pass_with_files_still_to_upload() -> None:
    check_outbound("image", {"media": {"kind": "image", "sha256": "ab", "filename": "a.png"}})
    check_outbound("file", {"media_id": "MEDIA"})
    check_outbound(
        "link", {"title": "标题", "desc": "描述", "url": "https://a.b", "thumb_media": {"sha256": "c"}}
    )
    check_outbound(
        "miniprogram", {"appid": "wx1", "title": "商城", "pagepath": "pages/index", "thumb_media_id": "m"}
    )
    check_outbound("location", {"latitude": 31.2, "longitude": 121.4, "name": "上海", "address": "人民广场"})
    check_outbound(
        "msgmenu",
        {"head_content": "请选择", "list": [{"type": "click", "click": {"id": "1", "content": "查物流"}}]},
    )


def test_every_inbound_type_renders_its_contents() -> None:
    assert render_text(
        "location", {"name": "仓库", "address": "上海", "latitude": 31.2, "longitude": 121.4}
    ) == ("[位置 location] 仓库 上海 (31.2, 121.4)")
    assert (
        render_text("link", {"title": "订单详情", "url": "https://shop/1"})
        == "[链接 link] 订单详情 https://shop/1"
    )
    assert "199.00" in render_text("channels_shop_product", {"title": "茶具", "sales_price": "19900"})
    assert "已发货" in render_text("channels_shop_order", {"order_id": "1", "state": "已发货"})
    assert render_text("channels", {"nickname": "青禾", "title": "新品"}) == "[视频号 channels] 青禾 新品"
    assert render_text("business_card", {"userid": "zhangsan"}) == "[名片 business card] zhangsan"
    merged = {
        "title": "聊天记录",
        "item": [
            {"sender_name": "小王", "msgtype": "text", "msg_content": '{"text": {"content": "快递到了吗"}}'},
            {"sender_name": "客服", "msgtype": "image", "msg_content": '{"image": {"media_id": "m"}}'},
        ],
    }
    assert (
        render_text("merged_msg", merged)
        == "[聊天记录 chat history] 聊天记录\n小王：快递到了吗\n客服：[图片 image]"
    )
    assert render_text("some_future_type", {"x": 1}) == "[some_future_type]"


def test_only_what_the_customer_wrote_is_searched() -> None:
    assert searchable_text("image", {"media_id": "m"}) == ""
    assert searchable_text("location", {"name": "图片社"}) == ""
    assert searchable_text("text", {"content": "退货", "menu_id": "m1"}) == "退货"
    assert searchable_text("voice", {"media_id": "m", "transcript": "怎么退货"}) == "怎么退货"
    merged = {"item": [{"msgtype": "text", "msg_content": '{"text": {"content": "能开发票吗"}}'}]}
    assert searchable_text("merged_msg", merged) == "能开发票吗"


def test_account_settings_from_the_command_line_name_what_is_wrong() -> None:
    from wxkf.kf.accounts import AccountSettingsError, parse_changes, validated

    assert parse_changes({"kb_collections": "tea, ", "persona": ""}) == {
        "kb_collections": ["tea", ""],
        "persona": None,
    }
    with pytest.raises(AccountSettingsError, match="未知的设置 'colour'"):
        parse_changes({"colour": "red"})
    with pytest.raises(AccountSettingsError, match="welcome_menu"):
        parse_changes({"welcome_menu": "{not json"})
    with pytest.raises(
        AccountSettingsError, match=r"welcome_menu\.options\.0\.id: 必填，请补上 / Field required"
    ):
        validated({}, {"welcome_menu": {"options": [{"content": "x", "action": "answer"}]}})
    with pytest.raises(AccountSettingsError, match=r"welcome_menu\.options\.0\.action"):
        validated({}, {"welcome_menu": {"options": [{"id": "a", "content": "x", "action": "teleport"}]}})
