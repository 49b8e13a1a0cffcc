"""The responder seam: what the pipeline asks for a reply, and what it gets back.

The pipeline owns everything WeCom imposes (order, state, the 48 h / 5 budget, splitting, sending);
a responder only decides *what* to say. Implementations: the offline FAQ/knowledge-base responder,
the LLM responder (`wxkf.agent`), and scripted ones in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Conversation:
    """One customer of one kf account."""

    open_kfid: str
    external_userid: str


@dataclass(frozen=True)
class MediaContent:
    """What a customer's image, voice, video or file turned into after media/get (spec §3, §8).

    `status` is "stored" (the bytes are kept; `data` holds them for images and voice, which a
    responder can use) or "failed" (`error` says why: expired, too large, refused by WeCom).
    """

    kind: str
    status: str
    content_type: str = ""
    filename: str = ""
    size: int = 0
    sha256: str = ""
    data: bytes | None = None
    error: str = ""


@dataclass(frozen=True)
class InboundMessage:
    """A customer message as the responder sees it.

    `content` is the WeCom body for `msgtype` (spec §3, e.g. {"content": …} for text,
    {"latitude": …, "name": …} for location); `text` is a readable rendering for any msgtype
    (e.g. "[位置] 上海市… (31.2, 121.4)"), so a text-only responder can still answer. `media` is
    set for image / voice / video / file; `menu_id` when the customer tapped a menu option.
    """

    msgid: str
    msgtype: str
    content: dict[str, Any]
    text: str
    send_time: datetime
    media: MediaContent | None = None

    @property
    def menu_id(self) -> str | None:
        value = self.content.get("menu_id") if self.msgtype == "text" else None
        return str(value) if value else None


# A message other than the reply's text: (msgtype, its spec §4 body). A file to upload is given as
# {"media": {"kind", "sha256", "filename"}} (a key in the media store) in place of `media_id`, and a
# thumbnail as {"thumb_media": {…}} in place of `thumb_media_id`; they are uploaded when sent.
OutboxMessage = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class ReplyRequest:
    """Everything a responder may use to answer one batch of customer messages."""

    conversation: Conversation
    messages: list[InboundMessage]
    remaining_budget: int  # messages WeCom still allows in this 48 h window (spec §4), ≥ 1
    max_text_bytes: int = 2048  # spec §4: one text message is at most 2048 bytes
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """What to send. `text` may be long: the pipeline splits it within the budget.

    An empty `text` means "say nothing". `handoff` asks the pipeline to hand the customer to a
    human (service_state/trans → 2, or → 3 with `handoff_servicer`). The pipeline hands over only
    when a servicer can receive (`wxkf.kf.handoff`); when none can, it sends `unattended_text`
    instead (when given) and the bot keeps the customer, so nobody waits in an unattended queue.
    `question` is what the customer asked, for the servicers' notification. `messages` follow the
    text (a knowledge-base entry's image or file, a menu …); each one counts against the budget.
    """

    text: str
    handoff: bool = False
    handoff_servicer: str | None = None
    sources: list[str] = field(default_factory=list)
    messages: list[OutboxMessage] = field(default_factory=list)
    unattended_text: str = ""
    question: str = ""


class Responder(Protocol):
    async def respond(self, request: ReplyRequest) -> Reply: ...
