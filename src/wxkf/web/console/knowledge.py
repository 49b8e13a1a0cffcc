"""The knowledge base as the console manages it, through the store's public API (`wxkf.agent.kb`).

Uploaded files are kept in `console_kb_files` beside the document they became, so a document can be
re-indexed from its own bytes (removed and added again with today's chunking and embedder). When the
adding fails, the file stays, marked as not indexed, and can be tried again.

The search preview asks the store without its relevance gate, to show every candidate with its
scores, and shows the store's own decision beside each (`Passage.relevant`, what `wxkf kb search`
prints and the bot answers from): answered when the best is relevant, and used, only the relevant.
Scores are shown by field, whatever fields a `Passage` has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from wxkf.agent.kb.loaders import UnsupportedDocument, check_size_of, detect_format

if TYPE_CHECKING:
    from wxkf.agent.kb.store import AddResult, KnowledgeBase, Passage

STATUS = {
    "added": "已添加 / added",
    "updated": "已更新 / updated",
    "unchanged": "未变化 / unchanged",
    "duplicate": "内容重复，已跳过 / duplicate, skipped",
    "empty": "没有文字 / no text",
}
_NOT_SCORES = {"text", "source", "heading", "chunk_id", "document_id"}


class KnowledgeRefusal(Exception):
    """A knowledge-base action the console will not do; the message says why."""


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass(frozen=True)
class DocumentRow:
    id: int | None
    source: str
    format: str
    chunks: int
    added_at: Any
    file_id: int | None
    uploaded_by: str


_FILES = (
    "SELECT id, document_id, filename, format, uploaded_by, uploaded_at FROM console_kb_files ORDER BY id"
)
_STORE_FILE = """
INSERT INTO console_kb_files (document_id, source, filename, format, data, uploaded_by)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (source) DO UPDATE SET document_id = EXCLUDED.document_id, filename = EXCLUDED.filename,
    format = EXCLUDED.format, data = EXCLUDED.data, uploaded_by = EXCLUDED.uploaded_by, uploaded_at = now()
"""
_FILE = "SELECT id, document_id, source, filename, format, data FROM console_kb_files WHERE id = %s"
_FILE_FOR_DOCUMENT = "SELECT id FROM console_kb_files WHERE document_id = %s"
_ATTACH = "UPDATE console_kb_files SET document_id = %s WHERE id = %s"
_FORGET_FILE = "DELETE FROM console_kb_files WHERE id = %s"


def source_for(filename: str) -> str:
    """The name answers cite for an uploaded file: its name, without any folder the browser sent."""
    return PurePath(filename.replace("\\", "/")).name


def check_upload(upload: Upload) -> str:
    """The file's format, or a refusal before anything is written."""
    name = source_for(upload.filename)
    try:
        fmt = detect_format(Path(name or "?"))
        check_size_of(name, len(upload.data), fmt)  # the limits `wxkf kb add` enforces
    except UnsupportedDocument as exc:
        raise KnowledgeRefusal(str(exc)) from None
    if not upload.data:
        raise KnowledgeRefusal(f"{name} 是空文件 / the file is empty")
    return fmt


async def documents(conn: AsyncConnection[Any], kb: KnowledgeBase) -> list[DocumentRow]:
    """Every document in the knowledge base, and uploaded files that are not (or no longer) indexed."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_FILES)
        files = list(await cur.fetchall())
    by_document = {f["document_id"]: f for f in files if f["document_id"] is not None}
    rows = [
        DocumentRow(
            d.id,
            d.source,
            d.format,
            d.chunks,
            d.added_at,
            by_document[d.id]["id"] if d.id in by_document else None,
            by_document[d.id]["uploaded_by"] if d.id in by_document else "命令行 / CLI",
        )
        for d in await kb.list_documents()
    ]
    rows.extend(
        DocumentRow(None, f["filename"], f["format"], 0, f["uploaded_at"], f["id"], f["uploaded_by"])
        for f in files
        if f["document_id"] is None
    )
    return rows


Progress = Callable[[str, int, int], None]


async def add_uploads(
    pool_conn: Callable[[], Any],
    kb: KnowledgeBase,
    uploads: Sequence[Upload],
    uploaded_by: str,
    progress: Progress | None = None,
) -> list[AddResult]:
    """Add uploaded files (all checked first) and keep their bytes for re-indexing."""
    from wxkf.agent.kb.store import SourceDocument

    checked = [(u, check_upload(u)) for u in uploads]
    try:
        docs = [SourceDocument.of(source_for(u.filename), u.data, fmt) for u, fmt in checked]
        results = await kb.add_documents(docs, progress=progress)
    except UnsupportedDocument as exc:
        raise KnowledgeRefusal(str(exc)) from None
    async with pool_conn() as conn, conn.transaction():
        for (upload, fmt), result in zip(checked, results, strict=True):
            if result.status in ("added", "updated", "unchanged") and result.document_id is not None:
                name = source_for(upload.filename)
                await conn.execute(
                    _STORE_FILE, (result.document_id, name, name, fmt, upload.data, uploaded_by)
                )
    return results


async def add_text_entry(
    pool_conn: Callable[[], Any], kb: KnowledgeBase, source: str, markdown: str, added_by: str
) -> AddResult:
    """A knowledge-base entry written in the console (an unanswered question and its answer)."""
    (result,) = await add_uploads(pool_conn, kb, [Upload(source, markdown.encode())], added_by)
    return result


async def remove(
    pool_conn: Callable[[], Any], kb: KnowledgeBase, document_id: int | None, file_id: int | None
) -> str:
    """Remove a document and its kept file; returns what was removed."""
    name = ""
    if document_id is not None:
        removed = await kb.remove(document_id)
        if removed is None:
            raise KnowledgeRefusal("没有这个文档（可能已被删除）/ no such document (removed already?)")
        name = removed.source
    if file_id is not None:
        async with pool_conn() as conn:
            await conn.execute(_FORGET_FILE, (file_id,))
    return name


async def reindex(
    pool_conn: Callable[[], Any], kb: KnowledgeBase, file_id: int, progress: Progress | None = None
) -> AddResult:
    """Index an uploaded file again from its kept bytes, with today's chunking and embedder."""
    from wxkf.agent.kb.store import SourceDocument

    async with pool_conn() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_FILE, (file_id,))
        row = await cur.fetchone()
    if row is None:
        raise KnowledgeRefusal(
            "该文档不是在控制台上传的，没有保存原文件；请用 wxkf kb add 重新添加 / this document was not "
            "uploaded in the console, so its file is not kept: add it again with wxkf kb add"
        )
    try:
        doc = SourceDocument.of(row["source"], bytes(row["data"]), row["format"])
    except UnsupportedDocument as exc:
        raise KnowledgeRefusal(str(exc)) from None
    if row["document_id"] is not None:
        await kb.remove(int(row["document_id"]))  # the kept file stays, detached, if adding fails below
    (result,) = await kb.add_documents([doc], progress=progress)
    if result.document_id is not None:
        async with pool_conn() as conn:
            await conn.execute(_ATTACH, (result.document_id, file_id))
    return result


async def file_for_document(conn: AsyncConnection[Any], document_id: int) -> int | None:
    row = await (await conn.execute(_FILE_FOR_DOCUMENT, (document_id,))).fetchone()
    return int(row[0]) if row is not None else None


@dataclass(frozen=True)
class Candidate:
    passage: Passage
    scores: list[tuple[str, float]]

    @property
    def used(self) -> bool:
        """Among what the bot answers from (`Passage.relevant`; the rest is weak context at most)."""
        return self.passage.relevant


@dataclass(frozen=True)
class Preview:
    query: str
    answered: bool
    candidates: list[Candidate]


def _scores(passage: Passage) -> list[tuple[str, float]]:
    return [
        (f.name, float(getattr(passage, f.name)))
        for f in dataclasses.fields(passage)
        if f.name not in _NOT_SCORES
        and isinstance(getattr(passage, f.name), int | float)
        and not isinstance(getattr(passage, f.name), bool)  # `relevant` is the decision, shown apart
    ]


async def preview(kb: KnowledgeBase, query: str, k: int = 5) -> Preview:
    """What the bot finds for `query`: the search `wxkf kb search` runs, the weak candidates kept."""
    from wxkf.agent.kb.store import answers

    candidates, _ = await kb.search_detailed(query, k, threshold=False)
    return Preview(query, answers(candidates), [Candidate(p, _scores(p)) for p in candidates])
