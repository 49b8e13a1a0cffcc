"""Replies to a push, answered before the responder: 查看1 / 详情 3, 不感兴趣, 退订 (and 订阅).

`PushReplies` wraps the pipeline's responder (the same seam, `wxkf.kf.responder.Responder`): a
batch that is one push command is answered here, through the same budget and outbox as any reply;
everything else goes to the wrapped responder unchanged. 查看N and 不感兴趣 are only taken as
commands from a customer who has received pushes, so the word means what it says elsewhere.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from wxkf.kf.responder import Reply, ReplyRequest, Responder
from wxkf.push.models import Owner

if TYPE_CHECKING:
    from wxkf.push.service import PushService


class Command(StrEnum):
    VIEW = "view"
    NOT_INTERESTED = "not_interested"
    UNSUBSCRIBE = "unsubscribe"
    SUBSCRIBE = "subscribe"


@dataclass(frozen=True)
class Parsed:
    command: Command
    number: int | None = None


_PATTERNS = [
    (re.compile(r"^(?:查看|详情|看看|看)\s*#?\s*(\d{1,6})$"), Command.VIEW),
    (re.compile(r"^不感兴趣\s*#?\s*(\d{1,6})?$"), Command.NOT_INTERESTED),
    (re.compile(r"^(?:退订|取消推送|关闭推送|td)$", re.IGNORECASE), Command.UNSUBSCRIBE),
    (re.compile(r"^(?:订阅|开启推送|恢复推送)$"), Command.SUBSCRIBE),
]


def parse(text: str) -> Parsed | None:
    """A push command in `text` (full-width digits and punctuation allowed), or None."""
    cleaned = unicodedata.normalize("NFKC", text).strip().strip("。.!！~～ ")
    for pattern, command in _PATTERNS:
        match = pattern.match(cleaned)
        if match:
            number = match.group(1) if match.groups() else None
            return Parsed(command, int(number) if number else None)
    return None


class PushReplies:
    """A `Responder` that answers push commands and hands everything else to `inner`."""

    def __init__(self, push: PushService, inner: Responder) -> None:
        self.push = push
        self.inner = inner

    async def respond(self, request: ReplyRequest) -> Reply:
        if len(request.messages) == 1 and request.messages[0].msgtype == "text":
            parsed = parse(request.messages[0].text)
            if parsed is not None:
                owner = Owner(
                    open_kfid=request.conversation.open_kfid,
                    external_userid=request.conversation.external_userid,
                )
                answer = await self.push.answer_command(owner, parsed)
                if answer is not None:
                    return Reply(text=answer)
        return await self.inner.respond(request)
