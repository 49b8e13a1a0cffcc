"""What a customer-contact message contains, checked before WeCom sees it (wecom-api §9).

The limits themselves (text ≤ 4000 bytes, ≤ 9 attachments, ≤ 10,000 customers, field sizes) live in
the protocol models (`wxkf.wecom.models.AddMsgTemplateRequest.check`); this module turns what a
member or the LLM typed into those models and their refusals into `InvalidMessageError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from wxkf.contact.errors import InvalidMessageError
from wxkf.wecom.errors import InvalidArgumentError
from wxkf.wecom.models import (
    TEMPLATE_MAX_EXTERNAL_USERIDS,
    AddMsgTemplateRequest,
    TemplateAttachment,
    Text,
)

API = "externalcontact/add_msg_template"
ATTACHMENT_TYPES = ("image", "link", "miniprogram", "video", "file")


_URL_FIELDS = frozenset({"url", "picurl", "pic_url"})  # what the customer's WeChat opens or loads


def attachment(msgtype: str, **fields: str) -> TemplateAttachment:
    """One attachment, e.g. `attachment("link", title=…, url=…)`; refuses unknown types and missing fields."""
    if msgtype not in ATTACHMENT_TYPES:
        raise InvalidMessageError(
            f"不支持的附件类型 {msgtype!r}（可用 {'/'.join(ATTACHMENT_TYPES)}）/ "
            f"unsupported attachment type {msgtype!r}"
        )
    for name in _URL_FIELDS.intersection(fields):
        if not fields[name].lower().startswith(("http://", "https://")):
            raise InvalidMessageError(
                f"{msgtype} 附件的 {name} 须以 http:// 或 https:// 开头 / {msgtype} attachment: {name} "
                "must start with http:// or https://"
            )
    try:
        return TemplateAttachment.model_validate({"msgtype": msgtype, msgtype: fields})
    except ValidationError as exc:
        missing = sorted({str(e["loc"][-1]) for e in exc.errors()})
        raise InvalidMessageError(
            f"{msgtype} 附件缺少或写错字段 {', '.join(missing)} / {msgtype} attachment: check "
            f"{', '.join(missing)}"
        ) from None


@dataclass(frozen=True)
class MessageContent:
    text: str = ""
    attachments: tuple[TemplateAttachment, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """A readable preview: the text, then one line per attachment."""
        lines = [self.text] if self.text.strip() else []
        for a in self.attachments:
            body = getattr(a, a.msgtype)
            label = (
                getattr(body, "title", None)
                or getattr(body, "media_id", None)
                or getattr(body, "pic_url", "")
            )
            lines.append(f"[{a.msgtype}] {label or ''}".rstrip())
        return "\n".join(lines)


def validate_recipients(external_userids: list[str]) -> list[str]:
    """Deduplicate (keeping order) and check the count against the per-task limit (wecom-api §9)."""
    unique = list(dict.fromkeys(u.strip() for u in external_userids if u.strip()))
    if not unique:
        raise InvalidMessageError("没有指定客户 / no customers given")
    if len(unique) > TEMPLATE_MAX_EXTERNAL_USERIDS:
        raise InvalidMessageError(
            f"一个群发任务最多 {TEMPLATE_MAX_EXTERNAL_USERIDS} 位客户，本次 {len(unique)} 位：请分批发送 / "
            f"at most {TEMPLATE_MAX_EXTERNAL_USERIDS} customers per task, got {len(unique)}: split the list"
        )
    return unique


def build_request(sender: str, external_userids: list[str], content: MessageContent) -> AddMsgTemplateRequest:
    """The add_msg_template request for these customers, checked against every documented limit."""
    request = AddMsgTemplateRequest(
        chat_type="single",
        sender=sender,
        external_userid=external_userids,
        text=Text(content=content.text) if content.text.strip() else None,
        attachments=list(content.attachments),
    )
    try:
        request.check(API)
    except InvalidArgumentError as exc:
        raise InvalidMessageError(f"消息不符合企业微信限制 / message refused before sending: {exc}") from exc
    return request


def check_content(content: MessageContent) -> MessageContent:
    """Refuse content WeCom would refuse, before any customer is looked at."""
    build_request("-", ["-"], content)
    return content
