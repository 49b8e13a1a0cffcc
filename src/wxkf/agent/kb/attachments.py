"""Images and files a knowledge-base entry references from its Markdown, sent with the answer.

    ## 尺码怎么选
    请参考尺码表：![尺码表](images/size_chart.png)，退货请填 [退货单](forms/return.pdf)。

A reference to a local file next to the document (not an http(s) link) becomes an attachment of
the chunk it appears in: an image (png, jpg, gif) is sent as an image message, anything else as a
file (wecom-api §4), uploaded when sent. In the chunk's text the reference reads 【图片：尺码表】 /
【附件：退货单】, so the answer says what follows it.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

from wxkf.agent.kb.loaders import UnsupportedDocument
from wxkf.wecom.models import MEDIA_MAX_BYTES, MEDIA_MIN_BYTES

_REFERENCE = re.compile(r"(!?)\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif"})


@dataclass(frozen=True)
class AttachmentFile:
    ref: str  # as written in the Markdown
    label: str  # what the chunk's text says in its place
    kind: str  # image | file
    filename: str
    content_type: str
    data: bytes


def _label(image: bool, text: str, filename: str) -> str:
    return f"【{'图片' if image else '附件'}：{text.strip() or filename}】"


def extract(markdown: str, base: Path) -> tuple[str, list[AttachmentFile]]:
    """The Markdown with local references replaced by their labels, and the files they name."""
    found: dict[str, AttachmentFile] = {}

    def replace(match: re.Match[str]) -> str:
        _bang, text, ref = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:", ref, re.I) or ref.startswith("#"):
            return match.group(0)  # a web link or an anchor: not ours to send
        path = (base / ref).resolve()
        if not path.is_file():
            return match.group(0)
        image = path.suffix.lower() in IMAGE_SUFFIXES
        kind = "image" if image else "file"
        data = path.read_bytes()
        if not MEDIA_MIN_BYTES <= len(data) <= MEDIA_MAX_BYTES[kind]:
            raise UnsupportedDocument(
                f"附件 {ref} 大小 {len(data)} 字节，企业微信要求 {MEDIA_MIN_BYTES}–{MEDIA_MAX_BYTES[kind]} 字节 / "
                f"the attachment's size is outside what media/upload accepts for {kind}"
            )
        label = _label(image, text, path.name)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        found[ref] = AttachmentFile(ref, label, kind, path.name, content_type, data)
        return label

    text = _REFERENCE.sub(replace, markdown)
    return text, list(found.values())
