"""Read Markdown, plain text, HTML and PDF into heading-scoped sections.

A refusal (`UnsupportedDocument`) names the document: by the `name` its caller passes (the path as
the user gave it, an upload's file name), so in a folder of many files the bad one can be found.

HTML is parsed with the standard library's tokenizer, never executed or rendered: scripts, styles
and other non-content elements are dropped with their contents, entities are decoded, and h1–h6
become the heading path.
"""

from __future__ import annotations

import io
import logging
import re
from html.parser import HTMLParser
from pathlib import Path

from wxkf.agent.kb.chunking import Section

FORMATS = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text"}
FORMATS |= {".html": "html", ".htm": "html", ".pdf": "pdf"}


class UnsupportedDocument(ValueError):
    """The file cannot be read as a knowledge-base document; the message says why."""


def detect_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise UnsupportedDocument(
            f"不支持的文件类型 {path.suffix or '（无扩展名）'}：{path}，支持 .md .txt .html .pdf / "
            f"unsupported file type; use Markdown, text, HTML or PDF"
        ) from None


# Above these a file is refused before it is read: a 50 MB text file took minutes to chunk and embed
# with nothing on the screen. A knowledge base is FAQs and manuals; split a bigger file first. The one
# limit per kind, for every surface (CLI, console): `check_size_of`, and `LIMITS_TEXT` to state it.
MAX_TEXT_BYTES = 5 << 20  # Markdown, text, HTML: about 1.7 million Chinese characters
MAX_PDF_BYTES = 50 << 20  # PDFs carry images and fonts beside their text
LIMITS_TEXT = (
    f"Markdown、文本、HTML 每个不超过 {MAX_TEXT_BYTES >> 20} MiB，PDF 不超过 {MAX_PDF_BYTES >> 20} MiB / "
    f"Markdown, text, HTML up to {MAX_TEXT_BYTES >> 20} MiB each, PDF up to {MAX_PDF_BYTES >> 20} MiB"
)


def max_bytes(fmt: str) -> int:
    return MAX_PDF_BYTES if fmt == "pdf" else MAX_TEXT_BYTES


def check_size_of(name: str, size: int, fmt: str) -> None:
    """Refuse a document of `size` bytes over its format's limit."""
    limit = max_bytes(fmt)
    if size > limit:
        raise UnsupportedDocument(
            f"文件过大：{name} 有 {size / (1 << 20):.1f} MiB，{fmt} 文档最多 {limit >> 20} MiB，"
            f"请拆分后再添加 / the file is too large ({size / (1 << 20):.1f} MiB, at most "
            f"{limit >> 20} MiB for {fmt}): split it into smaller documents"
        )


def check_size(path: Path, fmt: str) -> None:
    """Refuse a file over its format's limit, before reading it; the refusal names it as given."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnsupportedDocument(f"无法读取文件 {path} / cannot read the file: {exc.strerror}") from exc
    check_size_of(str(path), size, fmt)


def decode_text(data: bytes, name: str = "") -> str:
    """UTF-8 (with or without BOM), else GB18030 — what Chinese Windows tools still save. A refusal
    names the document by `name`."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            raise UnsupportedDocument(
                f"无法识别{f'文件 {name} 的' if name else '文件'}编码，请另存为 UTF-8 / "
                "cannot decode the file: save it as UTF-8"
            ) from None


def read_sections(data: bytes, fmt: str, name: str = "") -> list[Section]:
    """The document's sections; a refusal names it by `name`."""
    if fmt == "markdown":
        return markdown_sections(decode_text(data, name))
    if fmt == "text":
        return [Section((), decode_text(data, name))]
    if fmt == "html":
        return html_sections(decode_text(data, name))
    if fmt == "pdf":
        return pdf_sections(data, name)
    raise UnsupportedDocument(f"unknown format {fmt!r}")


_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_sections(text: str) -> list[Section]:
    """One section per heading; `#` lines inside code fences are text, not headings."""
    sections: list[Section] = []
    path: list[str] = []
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        if "".join(body).strip():
            sections.append(Section(tuple(path), "\n".join(body)))
        body.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _ATX.match(line)
        if heading is None:
            body.append(line)
            continue
        flush()
        level = len(heading.group(1))
        del path[level - 1 :]
        path.extend([""] * (level - 1 - len(path)))
        path.append(heading.group(2).strip())
    flush()
    return sections


_SKIP = frozenset({"script", "style", "noscript", "template", "head", "svg", "iframe", "object"})
_BLOCK = frozenset(
    {"p", "div", "br", "li", "tr", "td", "th", "section", "article", "ul", "ol", "table", "blockquote", "pre"}
)


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.path: list[str] = []
        self.body: list[str] = []
        self.heading: list[str] | None = None
        self.heading_level = 0
        self.skip_depth = 0

    def flush(self) -> None:
        if "".join(self.body).strip():
            self.sections.append(Section(tuple(self.path), "".join(self.body)))
        self.body.clear()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip_depth += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.flush()
            self.heading, self.heading_level = [], int(tag[1])
        elif tag in _BLOCK:
            self.body.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self.heading is not None:
            del self.path[self.heading_level - 1 :]
            self.path.extend([""] * (self.heading_level - 1 - len(self.path)))
            self.path.append(" ".join("".join(self.heading).split()))
            self.heading = None
        elif tag in _BLOCK:
            self.body.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        (self.heading if self.heading is not None else self.body).append(data)


def html_sections(text: str) -> list[Section]:
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    parser.flush()
    return parser.sections


def pdf_sections(data: bytes, name: str = "") -> list[Section]:
    """One section per page, headed by its page number (PDFs carry no reliable headings); a refusal
    names the document by `name`."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    # pypdf logs what it works around in a damaged file (`EOF marker not found`) as warnings, in
    # English, before the error we raise says the same to the user; keep only its errors.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise UnsupportedDocument(
            f"无法读取 PDF{f' {name}' if name else ''} / cannot read the PDF: {exc}"
        ) from exc
    return [Section((f"第 {n} 页",), text) for n, text in enumerate(pages, start=1) if text.strip()]
