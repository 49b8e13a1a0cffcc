"""The default responder until a smarter one is configured: answers from a small FAQ by keywords.

The FAQ file (KF_FAQ_FILE) is JSON — `[{"keywords": ["价格", "price"], "answer": "…"}, …]` — and an
entry answers when any keyword appears in the customer's messages. Without a match it answers the
fallback text, so a customer is never left without a reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from wxkf.kf.responder import Reply, ReplyRequest

FALLBACK = "您好，已收到您的消息，我们会尽快回复。/ Thanks, we received your message and will answer soon."
BUILTIN = [
    ("你好 您好 在吗 hello hi", "您好！请问有什么可以帮您？/ Hello! How can we help?"),
    ("人工 客服 转人工 human agent", "正在为您转接人工客服，请稍候。/ Connecting you to a human agent."),
]


@dataclass(frozen=True)
class FAQEntry:
    keywords: tuple[str, ...]
    answer: str


def load_faq(path: Path | None) -> list[FAQEntry]:
    if path is None:
        return [FAQEntry(tuple(k.split()), a) for k, a in BUILTIN]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [FAQEntry(tuple(str(k) for k in item["keywords"]), str(item["answer"])) for item in data]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f'KF_FAQ_FILE 无法读取（{path}）：需要 JSON 列表 [{{"keywords": […], "answer": "…"}}] / '
            f"cannot read the FAQ file: {exc}"
        ) from exc


class FAQResponder:
    """Keyword match over the batch's text; the first entry that matches answers."""

    def __init__(self, entries: list[FAQEntry], fallback: str = FALLBACK) -> None:
        self._entries = entries
        self._fallback = fallback

    async def respond(self, request: ReplyRequest) -> Reply:
        text = " ".join(m.text for m in request.messages).lower()
        for entry in self._entries:
            if any(k.lower() in text for k in entry.keywords if k):
                return Reply(text=entry.answer, sources=["faq"])
        return Reply(text=self._fallback)
