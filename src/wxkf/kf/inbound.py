"""Customer messages as the responder sees them: any msgtype rendered to a readable `text` (wecom-api §3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from wxkf.kf.responder import InboundMessage

_MEDIA_LABELS = {"image": "图片 image", "voice": "语音 voice", "video": "视频 video", "file": "文件 file"}


def _s(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    return "" if value is None else str(value)


def render_text(msgtype: str, body: dict[str, Any]) -> str:
    """A one-line rendering of a message body so a text-only responder can still answer."""
    if msgtype == "text":
        return _s(body, "content")
    if msgtype in _MEDIA_LABELS:
        return f"[{_MEDIA_LABELS[msgtype]}]"
    if msgtype == "location":
        place = " ".join(p for p in (_s(body, "name"), _s(body, "address")) if p)
        return f"[位置 location] {place} ({_s(body, 'latitude')}, {_s(body, 'longitude')})".replace("  ", " ")
    if msgtype == "link":
        return f"[链接 link] {_s(body, 'title')} {_s(body, 'desc')} {_s(body, 'url')}".strip()
    if msgtype == "miniprogram":
        return f"[小程序 mini program] {_s(body, 'title')}".strip()
    if msgtype == "business_card":
        return f"[名片 business card] {_s(body, 'userid')}".strip()
    if msgtype == "msgmenu":
        return f"[菜单 menu] {_s(body, 'head_content')}".strip()
    if msgtype == "channels_shop_product":
        return f"[视频号商品 product] {_s(body, 'title')} {_s(body, 'sales_price')}".strip()
    if msgtype == "channels_shop_order":
        return f"[视频号订单 order] {_s(body, 'order_id')} {_s(body, 'product_titles')}".strip()
    if msgtype == "merged_msg":
        return f"[聊天记录 chat history] {_s(body, 'title')}".strip()
    return f"[{msgtype}]"


def to_inbound_message(msgid: str, msgtype: str, item: dict[str, Any], send_time: datetime) -> InboundMessage:
    """Build the responder's view of one recorded sync_msg item (`KfMessage` keeps the body as `body`;
    in WeCom's JSON it lives under the msgtype key, wecom-api §3)."""
    body = item.get("body") or item.get(msgtype)
    content: dict[str, Any] = body if isinstance(body, dict) else {}
    return InboundMessage(
        msgid=msgid, msgtype=msgtype, content=content, text=render_text(msgtype, content), send_time=send_time
    )
