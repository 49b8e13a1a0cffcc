"""Images and files a knowledge-base entry references from its Markdown, sent with the answer.

    ## 尺码怎么选
    请参考尺码表：![尺码表](images/size_chart.png)，退货请填 [退货单](forms/return.pdf)。

A reference to a local file next to the document (not an http(s) link) becomes an attachment of
the chunk it appears in: an image (png, jpg, gif) is sent as an image message, anything else as a
file (wecom-api §4), uploaded when sent. In the chunk's text the reference reads 【图片：尺码表】 /
【附件：退货单】, so the answer says what follows it.

A local reference may name only a regular file inside the document's own folder, symlinks resolved:
anything else (an absolute path, a `..` escape, a missing file, a folder) refuses the whole document
with the link named, since the file would otherwise be sent to whoever asks. A document without a
folder (a console upload) has no local file it may send, so any local reference refuses it.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

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


def extract(markdown: str, folder: Path | None, document: str) -> tuple[str, list[AttachmentFile]]:
    """The Markdown with local references replaced by their labels, and the files they name.

    `folder` is the document's own (None for an upload); `document` names it in a refusal."""
    found: dict[str, AttachmentFile] = {}

    def replace(match: re.Match[str]) -> str:
        _bang, text, ref = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:", ref, re.I) or ref.startswith("#"):
            return match.group(0)  # a web link or an anchor: not ours to send
        path = _local_file(ref, folder, document)
        image = path.suffix.lower() in IMAGE_SUFFIXES
        kind = "image" if image else "file"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise _refusal(document, ref, "无法读取", f"cannot be read ({exc.strerror})") from exc
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


def _local_file(ref: str, folder: Path | None, document: str) -> Path:
    """The regular file `ref` names inside `folder`, symlinks resolved; anything else refuses the document."""
    if folder is None:
        raise _refusal(
            document,
            ref,
            "指向本地文件，但上传的文档没有所在文件夹；请用 wxkf kb add 添加文档和它引用的文件",
            "names a local file, but an uploaded document has no folder: add it and its files with wxkf kb add",
        )
    if PurePosixPath(ref).is_absolute() or PureWindowsPath(ref).is_absolute():
        raise _refusal(document, ref, "是绝对路径", "is an absolute path")
    root = folder.resolve()
    path = (root / ref).resolve()
    if not path.is_relative_to(root):
        raise _refusal(document, ref, "指向文档所在文件夹之外", "points outside the document's folder")
    if not path.exists():
        raise _refusal(document, ref, "指向的文件不存在", "names a file that does not exist")
    if not path.is_file():
        raise _refusal(document, ref, "不是普通文件", "is not a regular file")
    return path


def _refusal(document: str, ref: str, why: str, why_en: str) -> UnsupportedDocument:
    return UnsupportedDocument(
        f"文档 {document} 中的链接 {ref} {why}；只能引用文档所在文件夹内的文件，请修改或删除该链接后再添加 / "
        f"the link {ref} in {document} {why_en}; link only files inside the document's folder, then add it again"
    )
