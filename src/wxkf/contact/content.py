"""What a customer-contact message may contain, checked before WeCom sees it (wecom-api §9).

add_msg_template takes text (≤ 4000 bytes) and up to 9 attachments of type image, link,
miniprogram, video or file, and up to 10,000 external_userid per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wxkf.contact.errors import InvalidMessageError

MAX_TEXT_BYTES = 4000  # wecom-api §9: text.content 最多4000字节
MAX_ATTACHMENTS = 9  # wecom-api §9: attachments 最多9个
MAX_RECIPIENTS = 10_000  # wecom-api §9: external_userid 最多1万个

# wecom-api §9: per attachment type, the required fields and byte limits of each field.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "image": (),  # media_id or pic_url, checked below
    "link": ("title", "url"),
    "miniprogram": ("title", "pic_media_id", "appid", "page"),
    "video": ("media_id",),
    "file": ("media_id",),
}
_MAX_BYTES: dict[str, dict[str, int]] = {
    "link": {"title": 128, "picurl": 2048, "desc": 512, "url": 2048},
    "miniprogram": {"title": 64},
}


@dataclass(frozen=True)
class Attachment:
    msgtype: str
    body: dict[str, str]

    def to_wecom(self) -> dict[str, Any]:
        return {"msgtype": self.msgtype, self.msgtype: dict(self.body)}

    def describe(self) -> str:
        b = self.body
        label = b.get("title") or b.get("media_id") or b.get("pic_url") or ""
        return f"[{self.msgtype}] {label}".rstrip()


@dataclass(frozen=True)
class MessageContent:
    text: str = ""
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)

    def to_wecom(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.text:
            body["text"] = {"content": self.text}
        if self.attachments:
            body["attachments"] = [a.to_wecom() for a in self.attachments]
        return body

    def describe(self) -> str:
        parts = [self.text] if self.text else []
        parts += [a.describe() for a in self.attachments]
        return "\n".join(parts)


def _nbytes(value: str) -> int:
    return len(value.encode("utf-8"))


def validate_content(content: MessageContent) -> MessageContent:
    """Return `content` if WeCom would accept it; otherwise raise `InvalidMessageError` saying why."""
    if not content.text.strip() and not content.attachments:
        raise InvalidMessageError(
            "消息内容为空：文字和附件不能同时为空 / text and attachments cannot both be empty"
        )
    if _nbytes(content.text) > MAX_TEXT_BYTES:
        raise InvalidMessageError(
            f"文字 {_nbytes(content.text)} 字节，超过上限 {MAX_TEXT_BYTES} 字节（约 1333 个汉字）/ "
            f"text is {_nbytes(content.text)} bytes; the limit is {MAX_TEXT_BYTES}"
        )
    if len(content.attachments) > MAX_ATTACHMENTS:
        raise InvalidMessageError(
            f"附件 {len(content.attachments)} 个，最多 {MAX_ATTACHMENTS} 个 / "
            f"{len(content.attachments)} attachments; at most {MAX_ATTACHMENTS}"
        )
    for a in content.attachments:
        if a.msgtype not in _REQUIRED:
            raise InvalidMessageError(
                f"不支持的附件类型 {a.msgtype!r}（可用 image/link/miniprogram/video/file）/ "
                f"unsupported attachment type {a.msgtype!r}"
            )
        missing = [f for f in _REQUIRED[a.msgtype] if not a.body.get(f)]
        if a.msgtype == "image" and not (a.body.get("media_id") or a.body.get("pic_url")):
            missing.append("media_id|pic_url")
        if missing:
            raise InvalidMessageError(
                f"{a.msgtype} 附件缺少字段 {', '.join(missing)} / {a.msgtype} attachment needs "
                f"{', '.join(missing)}"
            )
        for name, limit in _MAX_BYTES.get(a.msgtype, {}).items():
            if _nbytes(a.body.get(name, "")) > limit:
                raise InvalidMessageError(
                    f"{a.msgtype}.{name} 超过 {limit} 字节 / {a.msgtype}.{name} exceeds {limit} bytes"
                )
    return content


def validate_recipients(external_userids: list[str]) -> list[str]:
    """Deduplicate (keeping order) and check the count against the per-task limit."""
    unique = list(dict.fromkeys(u.strip() for u in external_userids if u.strip()))
    if not unique:
        raise InvalidMessageError("没有指定客户 / no customers given")
    if len(unique) > MAX_RECIPIENTS:
        raise InvalidMessageError(
            f"一个群发任务最多 {MAX_RECIPIENTS} 位客户，本次 {len(unique)} 位：请分批发送 / "
            f"at most {MAX_RECIPIENTS} customers per task, got {len(unique)}: split the list"
        )
    return unique
