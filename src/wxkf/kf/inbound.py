"""Customer messages as the responder sees them: any msgtype rendered to a readable `text` (wecom-api §3).

`render_text` is what a person (and the LLM) reads: a location is its name, address and
coordinates, a link its title and URL, a chat history (merged_msg) its items. `searchable_text` is
the part that may be looked up in the knowledge base: only what the customer wrote. A label such as
「图片」 is never searched: it would match whatever entry talks about pictures.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from wxkf.kf.responder import InboundMessage, MediaContent
from wxkf.wecom.models import CUSTOMER_MSGTYPES

# What wxkf knows: what customers send (wecom-api §3) and events. Anything else WeCom added since.
KNOWN_MSGTYPES = CUSTOMER_MSGTYPES | {"event"}

MEDIA_LABELS = {"image": "图片 image", "voice": "语音 voice", "video": "视频 video", "file": "文件 file"}
MERGED_ITEMS_SHOWN = 30  # a forwarded chat history of hundreds of lines is summarised by its first ones


def _s(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    return "" if value is None else str(value)


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _merged_item(item: Any) -> tuple[str, str]:
    """(who, what) of one merged_msg item; `msg_content` is the inner message as a JSON string."""
    if not isinstance(item, dict):
        return "", ""
    raw = item.get("msg_content")
    inner: Any = raw
    if isinstance(raw, str):
        try:
            inner = json.loads(raw)
        except ValueError:
            inner = {"msgtype": "text", "text": {"content": raw}}
    msgtype = str(item.get("msgtype") or (inner.get("msgtype") if isinstance(inner, dict) else "") or "text")
    body: Any = inner.get(msgtype, inner) if isinstance(inner, dict) else {}
    return _s(item, "sender_name"), render_text(msgtype, body if isinstance(body, dict) else {})


def merged_items(body: dict[str, Any]) -> list[tuple[str, str]]:
    items = body.get("item")
    return [_merged_item(item) for item in items] if isinstance(items, list) else []


def render_text(msgtype: str, body: dict[str, Any]) -> str:
    """A rendering of a message body so a text-only responder can still answer."""
    if msgtype == "text":
        return _s(body, "content")
    if msgtype in MEDIA_LABELS:
        label = f"[{MEDIA_LABELS[msgtype]}]"
        transcript = _s(body, "transcript")
        return f"{label} {transcript}" if transcript else label
    if msgtype == "location":
        place = _join(_s(body, "name"), _s(body, "address"))
        return _join("[位置 location]", place, f"({_s(body, 'latitude')}, {_s(body, 'longitude')})")
    if msgtype == "link":
        return _join("[链接 link]", _s(body, "title"), _s(body, "desc"), _s(body, "url"))
    if msgtype == "miniprogram":
        return _join("[小程序 mini program]", _s(body, "title"), _s(body, "pagepath"))
    if msgtype == "business_card":
        return _join("[名片 business card]", _s(body, "userid"))
    if msgtype == "msgmenu":
        return _join("[菜单 menu]", _s(body, "head_content"))
    if msgtype == "channels_shop_product":
        price = _s(body, "sales_price")
        yuan = f"¥{int(price) / 100:.2f}" if price.isdigit() else price
        return _join("[视频号商品 product]", _s(body, "title"), yuan, _s(body, "shop_nickname"))
    if msgtype == "channels_shop_order":
        return _join(
            "[视频号订单 order]",
            _s(body, "order_id"),
            _s(body, "product_titles"),
            _s(body, "price_wording"),
            _s(body, "state"),
        )
    if msgtype == "channels":
        return _join("[视频号 channels]", _s(body, "nickname"), _s(body, "title"))
    if msgtype == "merged_msg":
        items = merged_items(body)
        lines = [f"{who}：{what}" if who else what for who, what in items[:MERGED_ITEMS_SHOWN]]
        if len(items) > MERGED_ITEMS_SHOWN:
            lines.append(f"…（共 {len(items)} 条 / {len(items)} items）")
        return "\n".join([_join("[聊天记录 chat history]", _s(body, "title")), *lines])
    return f"[{msgtype}]"


def searchable_text(msgtype: str, body: dict[str, Any]) -> str:
    """What the customer wrote themselves, to look up in the knowledge base ("" for labels)."""
    if msgtype == "text":
        return _s(body, "content")
    if msgtype == "voice":
        return _s(body, "transcript")
    if msgtype == "merged_msg":
        return "\n".join(what for _, what in merged_items(body) if what and not what.startswith("["))
    return ""


def to_inbound_message(
    msgid: str, msgtype: str, item: dict[str, Any], send_time: datetime, media: MediaContent | None = None
) -> InboundMessage:
    """Build the responder's view of one recorded sync_msg item (`KfMessage` keeps the body as `body`;
    in WeCom's JSON it lives under the msgtype key, wecom-api §3)."""
    body = item.get("body") or item.get(msgtype)
    content: dict[str, Any] = body if isinstance(body, dict) else {}
    return InboundMessage(
        msgid=msgid,
        msgtype=msgtype,
        content=content,
        text=render_text(msgtype, content),
        send_time=send_time,
        media=media,
    )
