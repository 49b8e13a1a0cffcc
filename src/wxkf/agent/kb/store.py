"""The knowledge base: documents and chunks in PostgreSQL, searched by vector and by terms.

Writers (`add_documents`, `remove`, `reindex`) hold one transaction-scoped advisory lock, so any
number of processes can share a knowledge base; after every change the document frequencies and the
corpus generation are refreshed and every chunk whose vectors are stale is re-embedded in the same
transaction, so readers always see chunks, IDF and vectors that agree, and never vectors of two
models in one search.

Search fuses the two halves on scores that mean something, not on ranks: the vector similarity is
mapped through the embedder's `similarity_range` (0 = unrelated, 1 = the same question; a fused
embedder's through each model's own, read from one stored vector by a second, contrast query) and the
share of the question's term weight (IDF) a passage holds is added with `LEXICAL_WEIGHT`. The
question is answered when the best fused score reaches `MIN_RELEVANCE`, the one relevance decision,
chosen from the recall / abstention curve in benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import AsyncCursor
from psycopg.rows import dict_row

from wxkf.agent.kb.attachments import AttachmentFile
from wxkf.agent.kb.attachments import extract as extract_attachments
from wxkf.agent.kb.chunking import Chunk, chunk_sections
from wxkf.agent.kb.embedders import (
    CorpusStats,
    CorpusWeighted,
    Embedder,
    FusedEmbedder,
    make_embedder,
    semantic_evidence,
)
from wxkf.agent.kb.loaders import UnsupportedDocument, check_size, decode_text, detect_format, read_sections
from wxkf.agent.kb.text import TERMS_VERSION, lexical_terms, term_counts
from wxkf.db.engine import Database
from wxkf.db.vectors import vector_literal
from wxkf.kf.responder import OutboxMessage
from wxkf.media.storage import MediaStore

if TYPE_CHECKING:
    from wxkf.config import Settings

_WRITE_LOCK = 0x6B625F77  # "kb_w": one writer at a time across processes
_EMBED_BATCH = 32  # chunks per embedding call: a progress step of a few seconds with a local model
CANDIDATES = 30  # per half, before fusion
BM25_K1, BM25_B = 1.2, 0.75
EF_SEARCH = max(40, CANDIDATES)  # pgvector's default, and never under the candidates wanted
# The lexical half scores at most this many chunks, chosen by the question's rarer terms: common terms
# still add to a chunk's score, but a question made of everyday words cannot make PostgreSQL score
# most of a large knowledge base (each scored chunk is a random heap page).
LEXICAL_CANDIDATE_BUDGET = 500
# Fused score = semantic evidence (similarity mapped to 0 … 1 by the embedder's range) + LEXICAL_WEIGHT ×
# the share of the question's term weight the passage holds. Tuned on the sample FAQ's dev half.
LEXICAL_WEIGHT = 0.3
# The relevance decision: the best passage's fused score must reach this for the question to be
# answered; then the ranking's top k are returned, each marked relevant or not.
MIN_RELEVANCE = 0.65

Progress = Callable[[str, int, int], None]  # (stage, done, total)

Cursor = AsyncCursor[dict[str, Any]]  # the knowledge base reads rows by column name

# What `KnowledgeBaseStatus.from_row` reads: documents, chunks, the stored embedder version, the generation.
STATUS_SQL = (
    "SELECT (SELECT count(*) FROM kb_documents), n_chunks, embedder_version, generation FROM kb_state"
)

# Writing: every statement runs in the writer's transaction, under `_LOCK`.
_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_SAME_DOCUMENT = (
    "SELECT id, source, content_hash, collection FROM kb_documents "
    "WHERE source = %(source)s OR content_hash = %(hash)s"
)
_DELETE_DOCUMENT = "DELETE FROM kb_documents WHERE id = %s RETURNING id"
_INSERT_DOCUMENT = (
    "INSERT INTO kb_documents (source, format, content_hash, collection) "
    "VALUES (%(source)s, %(format)s, %(hash)s, %(collection)s) RETURNING id"
)
_INSERT_CHUNK = (
    "INSERT INTO kb_chunks (document_id, ordinal, heading, text, terms, n_terms) "
    "VALUES (%(document_id)s, %(ordinal)s, %(heading)s, %(text)s, %(terms)s, %(n_terms)s)"
)
_INSERT_ATTACHMENT = (
    "INSERT INTO kb_attachments (document_id, ordinal, ref, kind, filename, content_type, sha256, size) "
    "VALUES (%(document_id)s, %(ordinal)s, %(ref)s, %(kind)s, %(filename)s, %(content_type)s, %(sha256)s, "
    "%(size)s) ON CONFLICT DO NOTHING"
)
_COUNT_CHUNKS = "SELECT count(*) AS n FROM kb_chunks WHERE document_id = %s"
_TERMS_VERSION = "SELECT terms_version FROM kb_state"
_ALL_CHUNKS = "SELECT id, heading, text FROM kb_chunks ORDER BY id"
_STORE_TERMS = (
    "UPDATE kb_chunks AS c SET terms = CAST(u.terms AS text[]), n_terms = u.n "
    "FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(terms)s AS text[]), CAST(%(ns)s AS int[])) "
    "AS u(id, terms, n) WHERE c.id = u.id"
)
_SET_TERMS_VERSION = "UPDATE kb_state SET terms_version = %s"
_CLEAR_TERMS = "DELETE FROM kb_terms"
_COUNT_TERMS = (
    "INSERT INTO kb_terms (term, df) SELECT t, count(*) FROM kb_chunks, unnest(terms) AS t GROUP BY t"
)
_NEXT_GENERATION = (
    "UPDATE kb_state SET generation = generation + 1, "
    "n_chunks = (SELECT count(*) FROM kb_chunks), "
    "avg_terms = (SELECT coalesce(avg(n_terms), 0) FROM kb_chunks)"
)
_STATE = "SELECT * FROM kb_state"
_TERMS = "SELECT term, df FROM kb_terms"
_STALE_CHUNKS = (
    "SELECT id, heading, text FROM kb_chunks WHERE embedder_version IS DISTINCT FROM %s ORDER BY id"
)
_STORE_VECTORS = (
    "UPDATE kb_chunks AS c SET embedding = u.e::vector, embedder_version = %(version)s "
    "FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(vectors)s AS text[])) AS u(id, e) WHERE c.id = u.id"
)
_SET_EMBEDDER_VERSION = "UPDATE kb_state SET embedder_version = %s"
# {dim}: the vectors' dimension. HNSW needs a fixed one: one partial index per dimension in use.
_ENSURE_HNSW = (
    "CREATE INDEX IF NOT EXISTS ix_kb_chunks_hnsw_{dim} ON kb_chunks USING hnsw "
    "((embedding::vector({dim})) vector_cosine_ops) WHERE vector_dims(embedding) = {dim}"
)

# Reading.
_DOCUMENTS = (
    "SELECT d.id, d.source, d.format, d.added_at, d.collection, "
    "(SELECT count(*) FROM kb_chunks c WHERE c.document_id = d.id) AS chunks "
    "FROM kb_documents d ORDER BY d.id"
)
# A search's bookkeeping in one round trip: the state, the question's term frequencies, the HNSW width.
_SEARCH_STATE = (
    "SELECT s.*, f.df_terms, f.df_counts, set_config('hnsw.ef_search', %(ef)s, false) "
    "FROM kb_state s, (SELECT coalesce(array_agg(term), '{}') AS df_terms, "
    "coalesce(array_agg(df), '{}') AS df_counts FROM kb_terms WHERE term = ANY(%(terms)s)) AS f"
)
# Only chunks of documents in the wanted collections (cols NULL: every collection).
_IN_COLLECTIONS = (
    "(CAST(%(cols)s AS text[]) IS NULL OR document_id IN "
    "(SELECT id FROM kb_documents WHERE collection = ANY(CAST(%(cols)s AS text[]))))"
)
# The weight of the question's terms a chunk holds (binary term frequency): {terms} and {weights}
# are the question's, {chunk_terms} the chunk's.
_MATCHED = (
    "SELECT sum(q.w) FROM unnest(CAST({terms} AS text[]), CAST({weights} AS float8[])) AS q(t, w) "
    "WHERE q.t = ANY({chunk_terms})"
)
# The lexical half: candidates (GIN), capped, scored as they are read; then BM25, the matched weight
# over the length normalisation. {holds}: `@>` (all of the filter's terms) or `&&` (any of them).
_LEXICAL = (
    "WITH candidates AS (SELECT id, n_terms, %(known)s + coalesce(("
    + _MATCHED.format(chunk_terms="terms", terms="%(checked)s", weights="%(cws)s")
    + "), 0) AS matched FROM kb_chunks"
    " WHERE terms {holds} CAST(%(filter)s AS text[])"
    " AND " + _IN_COLLECTIONS + " LIMIT %(budget)s) "
    "SELECT c.id FROM candidates c ORDER BY c.matched"
    " / (1 + %(k1)s * (1 - %(b)s + %(b)s * c.n_terms / greatest(%(avg)s, 1))) DESC, c.id LIMIT %(n)s"
)
# One statement: the HNSW top candidates (in the order found) and the lexical ones, each with both
# kinds of evidence (vector similarity, the contrast query's inner product for a fused embedder, matched
# term weight). {dim}: the question's dimension.
_SEARCH = (
    "WITH v AS (SELECT id, rank FROM unnest(ARRAY("
    " SELECT id FROM kb_chunks WHERE vector_dims(embedding) = {dim} AND " + _IN_COLLECTIONS + ""
    " ORDER BY embedding::vector({dim}) <=> CAST(%(q)s AS vector({dim})) LIMIT %(vn)s"
    ")) WITH ORDINALITY AS u(id, rank)), "
    "ranked AS (SELECT id, min(rank) AS rank FROM (SELECT id, rank FROM v UNION ALL"
    " SELECT id, NULL FROM unnest(CAST(%(lex)s AS bigint[])) AS l(id)) AS x GROUP BY id) "
    "SELECT c.id, c.document_id, c.heading, c.text, d.source, r.rank, "
    " CASE WHEN vector_dims(c.embedding) = {dim} "
    "  THEN 1 - (c.embedding::vector({dim}) <=> CAST(%(q)s AS vector({dim}))) ELSE 0 END AS similarity, "
    " CASE WHEN vector_dims(c.embedding) = {dim} "
    "  THEN -(c.embedding::vector({dim}) <#> CAST(%(qc)s AS vector({dim}))) END AS contrast, "
    " coalesce(("
    + _MATCHED.format(chunk_terms="c.terms", terms="%(terms)s", weights="%(ws)s")
    + "), 0) AS matched "
    "FROM ranked r JOIN kb_chunks c ON c.id = r.id JOIN kb_documents d ON d.id = c.document_id"
)
_ATTACHMENTS = (
    "SELECT c.id AS chunk_id, a.kind, a.filename, a.sha256 FROM kb_attachments a "
    "JOIN kb_chunks c ON c.document_id = a.document_id AND c.ordinal = a.ordinal "
    "WHERE c.id = ANY(%s) ORDER BY a.id"
)


class KnowledgeBaseError(Exception):
    """A knowledge-base operation failed; the message says why and what to do."""


class KnowledgeBaseStale(KnowledgeBaseError):
    """The chunks were embedded by another model than the configured one: `wxkf kb reindex`."""


@dataclass(frozen=True)
class KnowledgeBaseStatus:
    """What `/ready`, `doctor` and start-up say about the knowledge base."""

    documents: int
    chunks: int
    embedder: str  # the configured embedder's name
    stored_version: str | None  # what the chunks were embedded with
    current_version: str

    @classmethod
    def from_row(cls, row: Sequence[Any], embedder: Embedder) -> KnowledgeBaseStatus:
        """The status for `embedder` of a knowledge base whose `STATUS_SQL` row is `row`."""
        documents, chunks, stored_version, generation = (int(row[0]), int(row[1]), row[2], int(row[3]))
        current = embedder
        if isinstance(current, CorpusWeighted):
            # The hashing embedder's version follows the corpus generation it was weighted with.
            current = current.with_stats(CorpusStats(n_chunks=chunks, generation=generation))
        return cls(documents, chunks, embedder.name, stored_version, current.version)

    @property
    def empty(self) -> bool:
        return self.chunks == 0

    @property
    def stale(self) -> bool:
        """Chunks exist that the configured model has not embedded (a reindex is due)."""
        return self.chunks > 0 and self.stored_version != self.current_version


@dataclass(frozen=True)
class Passage:
    """One retrieved chunk.

    `score` is the fused evidence (higher is better; the passages are ordered by it); `relevant`
    says whether it reaches the knowledge base's relevance threshold. `similarity` (the vector
    cosine) and `coverage` (the share of the question's term weight the passage holds) are the two
    halves' raw evidence.
    """

    text: str
    source: str
    heading: str
    score: float
    relevant: bool
    similarity: float
    coverage: float
    chunk_id: int
    document_id: int
    # The entry's images and files (`OutboxMessage`s referencing the media store), sent after the text.
    attachments: tuple[OutboxMessage, ...] = ()

    @property
    def relevance(self) -> str:
        """The relevance decision in words, as `wxkf kb search` and the console's preview show it: a
        relevant passage is one the bot answers from, a weak one only context for the model."""
        return "相关 / relevant" if self.relevant else "弱相关 / weak"


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    source: str
    format: str
    chunks: int
    added_at: datetime
    collection: str = ""


@dataclass(frozen=True)
class AddResult:
    source: str
    status: str  # "added" | "updated" | "unchanged" | "duplicate" | "empty"
    document_id: int | None
    chunks: int


@dataclass(frozen=True)
class SourceDocument:
    """A document to add: where it came from (the name shown with answers), its bytes and format."""

    source: str
    data: bytes
    format: str
    attachments: tuple[AttachmentFile, ...] = ()

    @property
    def content_hash(self) -> str:
        """What tells one version of the document from another: its text and the bytes of each file it
        sends (a new image under the same name is a new version). Kept out of the text, where a marker
        would be chunked into what the customer reads."""
        digest = hashlib.sha256(self.data)
        for attachment in self.attachments:
            digest.update(f"\0{attachment.ref}\0{hashlib.sha256(attachment.data).hexdigest()}".encode())
        return digest.hexdigest()

    @classmethod
    def from_path(cls, path: Path, source: str | None = None) -> SourceDocument:
        """Read a file; a Markdown file's references to files in its folder become attachments. A
        refusal names the file by its path as given."""
        fmt = detect_format(path)
        check_size(path, fmt)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UnsupportedDocument(f"无法读取文件 {path} / cannot read the file: {exc.strerror}") from exc
        return cls.of(source or str(path.resolve()), data, fmt, folder=path.parent, name=str(path))

    @classmethod
    def of(
        cls, source: str, data: bytes, fmt: str, *, folder: Path | None = None, name: str | None = None
    ) -> SourceDocument:
        """A document from its bytes, for every surface: a Markdown file's references to local files
        must name files in `folder`, its own (none for an upload), and become attachments; a refusal
        names the document by `name`."""
        if fmt != "markdown":
            return cls(source, data, fmt)
        markdown, attachments = extract_attachments(decode_text(data, name or source), folder, name or source)
        if not attachments:
            return cls(source, data, fmt)
        return cls(source, markdown.encode("utf-8"), fmt, tuple(attachments))


class KnowledgeBase:
    """Search and maintain the knowledge base.

        kb = KnowledgeBase(database, HashingEmbedder())
        await kb.add_documents([Path("faq.md")])
        for passage in await kb.search("怎么退货", k=3):
            print(passage.score, passage.source, passage.heading, passage.text)

    `search` returns nothing when no passage is relevant enough, so a caller can say it does not know.
    The knowledge base owns its embedder (`aclose()` closes it), not the database.
    """

    def __init__(
        self,
        database: Database,
        embedder: Embedder,
        *,
        min_relevance: float | None = None,
        media_store: MediaStore | None = None,
    ):
        self.database = database
        self.embedder = embedder
        self.media_store = media_store  # where documents' attachments are kept (`add_documents`)
        self.min_relevance = MIN_RELEVANCE if min_relevance is None else min_relevance
        self._reembed_lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls, database: Database, settings: Settings, *, media_store: MediaStore | None = None
    ) -> KnowledgeBase:
        """The knowledge base as configured: `make_embedder`'s embedder and `KB_MIN_RELEVANCE` (unset:
        the calibrated `MIN_RELEVANCE`). Every surface (service, worker, console, CLI, demo) builds its
        knowledge base here, so a setting reaches all of them or none."""
        return cls(
            database,
            make_embedder(settings),
            min_relevance=settings.kb_min_relevance,
            media_store=media_store,
        )

    async def aclose(self) -> None:
        await self.embedder.aclose()

    # Connections ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[Cursor]:
        """A cursor in a transaction holding the writers' advisory lock."""
        async with (
            self.database.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(_LOCK, (_WRITE_LOCK,))
            yield cur

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[Cursor]:
        """A cursor on a pooled connection (autocommit: each statement is its own snapshot, as under
        READ COMMITTED, without the round trips of BEGIN and ROLLBACK around a read)."""
        async with self.database.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            yield cur

    # Writing --------------------------------------------------------------------------------

    async def add_documents(
        self,
        documents: Iterable[Path | SourceDocument],
        *,
        progress: Progress | None = None,
        collection: str = "",
    ) -> list[AddResult]:
        """Add files to `collection` ('' is the one every kf account shares); a file already present
        with the same content is left as it is.

        A source added again with new content replaces its old chunks. Raises `UnsupportedDocument`
        before changing anything when a file cannot be read: all or nothing, and every such file
        named, one line each.
        """
        # Reading, parsing, chunking and terming are CPU-bound (seconds for a few MB): in a thread, so
        # a server adding an upload keeps answering and stops when asked.
        prepared = await asyncio.to_thread(_prepare, list(documents))
        docs = [doc for doc, _chunks in prepared]
        if any(doc.attachments for doc in docs) and self.media_store is None:
            raise KnowledgeBaseError(
                "文档引用了图片或文件，但没有媒体存储 / the documents reference files but no media store is set"
            )
        # The files go to the media store (by content, idempotent) before the transaction: the store
        # may take a connection of the same pool, which a writer holding one must not wait for.
        stored: dict[AttachmentFile, str] = {}  # each file → its key in the media store
        for doc in docs:
            for attachment in doc.attachments:
                if self.media_store is not None and attachment not in stored:
                    stored[attachment] = await self.media_store.put(attachment.data)
        results: list[AddResult] = []
        async with self._writing() as cur:
            for done, (doc, chunks) in enumerate(prepared):
                results.append(await self._add_one(cur, doc, chunks, collection, stored))
                if progress:
                    progress("add", done + 1, len(prepared))
            retermed = await self._reterm_stale(cur)
            if retermed or any(r.status in ("added", "updated") for r in results):
                await self._refresh_corpus(cur)
            await self._reembed_stale(cur, progress)
        return results

    async def _add_one(
        self,
        cur: Cursor,
        doc: SourceDocument,
        chunks: Sequence[TermedChunk],
        collection: str,
        stored: dict[AttachmentFile, str],
    ) -> AddResult:
        digest = doc.content_hash
        await cur.execute(_SAME_DOCUMENT, {"source": doc.source, "hash": digest})
        existing = await cur.fetchall()
        same_source = next((row for row in existing if row["source"] == doc.source), None)
        if (
            same_source is not None
            and same_source["content_hash"] == digest
            and same_source["collection"] == collection
        ):
            return AddResult(
                doc.source, "unchanged", same_source["id"], await self._count_chunks(cur, same_source["id"])
            )
        if same_source is None and any(row["collection"] == collection for row in existing):
            # The same bytes under another name: adding them twice would only duplicate answers.
            return AddResult(doc.source, "duplicate", existing[0]["id"], 0)
        if not chunks:
            return AddResult(doc.source, "empty", None, 0)
        if same_source is not None:
            await cur.execute(_DELETE_DOCUMENT, (same_source["id"],))
        await cur.execute(
            _INSERT_DOCUMENT,
            {"source": doc.source, "format": doc.format, "hash": digest, "collection": collection},
        )
        document_id: int = _one(await cur.fetchone())["id"]
        rows = [
            {
                "document_id": document_id,
                "ordinal": ordinal,
                "heading": chunk.heading,
                "text": chunk.text,
                "terms": terms,
                "n_terms": len(terms),
            }
            for ordinal, (chunk, terms) in enumerate(chunks)
        ]
        await cur.executemany(_INSERT_CHUNK, rows)
        await self._add_attachments(cur, document_id, doc, chunks, stored)
        return AddResult(doc.source, "updated" if same_source else "added", document_id, len(chunks))

    async def _add_attachments(
        self,
        cur: Cursor,
        document_id: int,
        doc: SourceDocument,
        chunks: Sequence[TermedChunk],
        stored: dict[AttachmentFile, str],
    ) -> None:
        """Link each referenced file (already in the media store, under `stored`'s key) to the chunks
        whose text names it."""
        rows = [
            {
                "document_id": document_id,
                "ordinal": ordinal,
                "ref": attachment.ref,
                "kind": attachment.kind,
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "sha256": stored[attachment],
                "size": len(attachment.data),
            }
            for attachment in doc.attachments
            for ordinal, (chunk, _terms) in enumerate(chunks)
            if attachment.label in chunk.text
        ]
        if rows:
            await cur.executemany(_INSERT_ATTACHMENT, rows)

    async def remove(self, id_or_source: int | str) -> DocumentInfo | None:
        """Remove a document by id or by source (as listed, or a path to the file); None if absent."""
        found = await self._find(id_or_source)
        if found is None:
            return None
        async with self._writing() as cur:
            await cur.execute(_DELETE_DOCUMENT, (found.id,))
            deleted = await cur.fetchone()
            if deleted is not None:
                await self._reterm_stale(cur)
                await self._refresh_corpus(cur)
                await self._reembed_stale(cur, None)
        return found if deleted is not None else None

    async def _find(self, id_or_source: int | str) -> DocumentInfo | None:
        if isinstance(id_or_source, int) or id_or_source.isdigit():
            doc_id = int(id_or_source)
            return next((d for d in await self.list_documents() if d.id == doc_id), None)
        resolved = await asyncio.to_thread(lambda: str(Path(id_or_source).expanduser().resolve()))
        candidates = [id_or_source, resolved]
        return next((d for d in await self.list_documents() if d.source in candidates), None)

    async def _count_chunks(self, cur: Cursor, document_id: int) -> int:
        await cur.execute(_COUNT_CHUNKS, (document_id,))
        return int(_one(await cur.fetchone())["n"])

    async def _reterm_stale(self, cur: Cursor) -> bool:
        """Recompute every chunk's terms when they came from another version of the term extraction.

        True when terms changed (the caller then refreshes the corpus statistics, which re-embeds).
        """
        await cur.execute(_TERMS_VERSION)
        state = await cur.fetchone()
        if state is not None and state["terms_version"] == TERMS_VERSION:
            return False
        await cur.execute(_ALL_CHUNKS)
        rows = await cur.fetchall()
        for start in range(0, len(rows), _EMBED_BATCH):
            batch = rows[start : start + _EMBED_BATCH]
            term_lists = [sorted(term_counts(Chunk(r["heading"], r["text"]).indexed_text)) for r in batch]
            await cur.execute(
                _STORE_TERMS,
                {
                    "ids": [r["id"] for r in batch],
                    "terms": [_array_literal(t) for t in term_lists],
                    "ns": [len(t) for t in term_lists],
                },
            )
        await cur.execute(_SET_TERMS_VERSION, (TERMS_VERSION,))
        return True

    async def _refresh_corpus(self, cur: Cursor) -> None:
        """Recount document frequencies and move to a new generation (the IDF has changed)."""
        await cur.execute(_CLEAR_TERMS)
        await cur.execute(_COUNT_TERMS)
        await cur.execute(_NEXT_GENERATION)

    async def _corpus_stats(self, cur: Cursor) -> tuple[CorpusStats, dict[str, Any]]:
        """The corpus statistics for every term (a search reads its question's only: `_search_state`)."""
        await cur.execute(_STATE)
        state = _one(await cur.fetchone())
        await cur.execute(_TERMS)
        df = {str(r["term"]): int(r["df"]) for r in await cur.fetchall()}
        return CorpusStats(n_chunks=state["n_chunks"], df=df, generation=state["generation"]), state

    async def _search_state(self, cur: Cursor, terms: Sequence[str]) -> tuple[CorpusStats, dict[str, Any]]:
        """A search's first and only bookkeeping round trip: the state, the question's term frequencies,
        and the HNSW search width (`hnsw.ef_search`, pgvector's candidate list; at least the
        candidates wanted, or the index returns fewer).

        The search runs in autocommit, so the setting is the session's: it stays on the pooled
        connection, where only HNSW scans read it, and every search (and push's matching) sets it again.
        """
        await cur.execute(_SEARCH_STATE, {"terms": list(terms), "ef": str(EF_SEARCH)})
        state = _one(await cur.fetchone())
        df = {str(t): int(d) for t, d in zip(state["df_terms"], state["df_counts"], strict=True)}
        return CorpusStats(n_chunks=state["n_chunks"], df=df, generation=state["generation"]), state

    def _embedder_for(self, stats: CorpusStats) -> Embedder:
        if isinstance(self.embedder, CorpusWeighted):
            return self.embedder.with_stats(stats)
        return self.embedder

    async def _reembed_stale(self, cur: Cursor, progress: Progress | None) -> int:
        """Embed every chunk not embedded with the current embedder and statistics; how many were."""
        stats, _state = await self._corpus_stats(cur)
        embedder = self._embedder_for(stats)
        # Chunks added since the last embedding carry no version, whether or not the model changed.
        await cur.execute(_STALE_CHUNKS, (embedder.version,))
        stale = await cur.fetchall()
        if progress and stale:
            progress("embed", 0, len(stale))  # the count at once: embedding is the long stage
        dims: set[int] = set()
        for start in range(0, len(stale), _EMBED_BATCH):
            batch = stale[start : start + _EMBED_BATCH]
            vectors = await embedder.embed([Chunk(r["heading"], r["text"]).indexed_text for r in batch])
            dims.update(len(v) for v in vectors)
            await cur.execute(
                _STORE_VECTORS,
                {
                    "version": embedder.version,
                    "ids": [r["id"] for r in batch],
                    "vectors": [_vector_literal(v) for v in vectors],
                },
            )
            if progress:
                progress("embed", start + len(batch), len(stale))
        for dim in dims:
            await _ensure_hnsw(cur, dim)
        await cur.execute(_SET_EMBEDDER_VERSION, (embedder.version,))
        return len(stale)

    async def reindex(self, progress: Progress | None = None) -> int:
        """Re-term and re-embed every chunk the configured embedder has not embedded; how many were.

        One transaction: searches meanwhile read the old vectors with the old model's state, then
        the new ones; never a mix.
        """
        async with self._reembed_lock, self._writing() as cur:
            if await self._reterm_stale(cur):
                await self._refresh_corpus(cur)
            return await self._reembed_stale(cur, progress)

    async def status(self) -> KnowledgeBaseStatus:
        async with self._reading() as cur:
            await cur.execute(STATUS_SQL)
            row = _one(await cur.fetchone())
        return KnowledgeBaseStatus.from_row(tuple(row.values()), self.embedder)

    # Reading --------------------------------------------------------------------------------

    async def list_documents(self) -> list[DocumentInfo]:
        async with self._reading() as cur:
            await cur.execute(_DOCUMENTS)
            rows = await cur.fetchall()
        return [
            DocumentInfo(r["id"], r["source"], r["format"], r["chunks"], r["added_at"], r["collection"])
            for r in rows
        ]

    async def search(
        self, query: str, k: int = 5, *, collections: Sequence[str] | None = None
    ) -> list[Passage]:
        """The `k` best passages for `query`, best first; empty when nothing is relevant enough.

        Hybrid: the nearest chunks by vector (HNSW, cosine) and the best chunks by terms (BM25 over
        CJK bigrams, words and synonym concepts) are fused on their scores (module docstring); the
        question is answered only when the best passage is relevant. `collections`: only documents
        in these collections answer (None: all).

        Raises `KnowledgeBaseStale` when the chunks were embedded by another model (`wxkf kb reindex`).
        """
        return (await self.search_detailed(query, k, collections=collections))[0]

    async def search_detailed(
        self,
        query: str,
        k: int = 5,
        *,
        halves: tuple[bool, bool] = (True, True),
        threshold: bool = True,
        collections: Sequence[str] | None = None,
        _caught_up: bool = False,
    ) -> tuple[list[Passage], dict[str, Any]]:
        """`search`, plus the option to use one half only and to skip the threshold (for evaluation).

        With one half, the score is that half's evidence alone: the mapped similarity, or the coverage.
        """
        return await self._search(query, lexical_terms(query), k, halves, threshold, _caught_up, collections)

    async def _search(
        self,
        query: str,
        query_terms: list[str],
        k: int,
        halves: tuple[bool, bool],
        threshold: bool,
        caught_up: bool,
        collections: Sequence[str] | None = None,
    ) -> tuple[list[Passage], dict[str, Any]]:
        use_vector, use_lexical = halves
        async with self._reading() as cur:
            stats, state = await self._search_state(cur, sorted(set(query_terms) | set(term_counts(query))))
            embedder = self._embedder_for(stats)
            if state["n_chunks"] == 0:
                return [], {}
            stale = state["embedder_version"] != embedder.version or state["terms_version"] != TERMS_VERSION
            ranked = None
            if not stale:
                ranked = await self._rank(
                    cur, query, query_terms, embedder, stats, state["avg_terms"], halves, collections
                )
        if ranked is None:
            # Caught up outside the search's connection: the reindex takes one of the same pool.
            if state["embedder_version"] != embedder.version and not isinstance(
                self.embedder, CorpusWeighted
            ):
                # A model re-embeds at a few dozen chunks a second: not inside a customer's search.
                raise KnowledgeBaseStale(
                    f"知识库的向量来自另一个模型（{state['embedder_version']}），当前配置为 {embedder.version}："
                    "运行 wxkf kb reindex 重新向量化 / the knowledge base was embedded by another model: "
                    "run `wxkf kb reindex`"
                )
            if caught_up:
                raise KnowledgeBaseError(
                    "知识库正被另一种向量模型重新向量化，请稍后重试 / the knowledge base is being "
                    "re-embedded with another embedder (another process?); try again"
                )
            await self.reindex()
            return await self._search(query, query_terms, k, halves, threshold, True, collections)
        found, lexical_ranked, total_weight = ranked
        vector_ranked = [
            r["id"] for r in sorted((r for r in found.values() if r["rank"]), key=lambda r: r["rank"])
        ]
        rows = [found[i] for i in dict.fromkeys([*vector_ranked, *lexical_ranked]) if i in found]
        passages: list[Passage] = []
        for r in rows:
            coverage = min(1.0, r["matched"] / total_weight) if total_weight else 0.0
            semantic = semantic_evidence(embedder, r["similarity"], r["contrast"])
            if use_vector and use_lexical:
                score = semantic + LEXICAL_WEIGHT * coverage
            else:
                score = semantic if use_vector else coverage
            passages.append(
                Passage(
                    text=r["text"],
                    source=r["source"],
                    heading=r["heading"],
                    score=round(score, 4),
                    relevant=score >= self.min_relevance,
                    similarity=round(float(r["similarity"]), 4),
                    coverage=round(coverage, 4),
                    chunk_id=r["id"],
                    document_id=r["document_id"],
                )
            )
        passages.sort(key=lambda p: (-p.score, p.chunk_id))
        details = {"vector": vector_ranked, "lexical": lexical_ranked}
        if threshold and not answers(passages):
            return [], details
        return await self._with_attachments(passages[:k]), details

    async def _rank(
        self,
        cur: Cursor,
        query: str,
        query_terms: list[str],
        embedder: Embedder,
        stats: CorpusStats,
        avg_terms: float,
        halves: tuple[bool, bool],
        collections: Sequence[str] | None,
    ) -> tuple[dict[int, dict[str, Any]], list[int], float]:
        """Both halves' candidates with their evidence (chunk id → row), the lexical ranking, and the
        question's total term weight."""
        use_vector, use_lexical = halves
        cols = None if collections is None else list(collections)
        weights = [stats.idf(t) for t in query_terms]
        total_weight = sum(weights)
        matchable = [(t, w) for t, w in zip(query_terms, weights, strict=True) if t in stats.df]
        # The question's embedding (a model's runs in its thread) goes on while PostgreSQL runs the
        # lexical half.
        embedding = asyncio.ensure_future(embedder.embed_query(query))
        try:
            lexical_ranked: list[int] = []
            if use_lexical and matchable:
                lexical_ranked = await self._lexical(cur, matchable, stats, avg_terms, cols)
            vector = await embedding
        finally:
            embedding.cancel()  # when the lexical half failed; a failed embedding's error is read
            if embedding.done() and not embedding.cancelled():
                embedding.exception()
        await cur.execute(
            _SEARCH.format(dim=len(vector)),
            {
                "q": _vector_literal(vector),
                "qc": _vector_literal(embedder.contrast_query(vector))
                if isinstance(embedder, FusedEmbedder)
                else None,
                "vn": CANDIDATES if use_vector else 0,
                "cols": cols,
                "lex": lexical_ranked,
                "terms": [t for t, _ in matchable] or [""],
                "ws": [w for _, w in matchable] or [0.0],
            },
        )
        found = {r["id"]: r for r in await cur.fetchall()}
        return found, lexical_ranked, total_weight

    async def _with_attachments(self, passages: list[Passage]) -> list[Passage]:
        if not passages:
            return passages
        async with self._reading() as cur:
            await cur.execute(_ATTACHMENTS, ([p.chunk_id for p in passages],))
            rows = await cur.fetchall()
        if not rows:
            return passages
        found: dict[int, list[OutboxMessage]] = {}
        for r in rows:
            found.setdefault(r["chunk_id"], []).append(
                (r["kind"], {"media": {"kind": r["kind"], "sha256": r["sha256"], "filename": r["filename"]}})
            )
        return [replace(p, attachments=tuple(found.get(p.chunk_id, ()))) for p in passages]

    async def _lexical(
        self,
        cur: Cursor,
        matchable: list[tuple[str, float]],
        stats: CorpusStats,
        avg_terms: float,
        cols: list[str] | None = None,
    ) -> list[int]:
        """The best chunks by terms, best first: BM25 with binary term frequency over capped candidates."""
        any_of, all_of = _candidate_terms(matchable, stats)
        # Every candidate holds all of `all_of`: their weight is a constant, not checked per chunk.
        checked = [(t, w) for t, w in matchable if t not in all_of]
        await cur.execute(
            _LEXICAL.format(holds="@>" if all_of else "&&"),
            {
                "filter": all_of or any_of,
                "known": math.fsum(w for t, w in matchable if t in all_of),
                "checked": [t for t, _ in checked] or [""],
                "cws": [w for _, w in checked] or [0.0],
                "budget": LEXICAL_CANDIDATE_BUDGET,
                "k1": BM25_K1,
                "b": BM25_B,
                "avg": avg_terms,
                "n": CANDIDATES,
                "cols": cols,
            },
        )
        return [int(r["id"]) for r in await cur.fetchall()]


def answers(ranked: Sequence[Passage]) -> bool:
    """The relevance decision: a question is answered when its best passage is relevant."""
    return bool(ranked) and ranked[0].relevant


TermedChunk = tuple[Chunk, list[str]]  # a chunk and the terms the lexical index stores for it


def _prepare(documents: Sequence[Path | SourceDocument]) -> list[tuple[SourceDocument, list[TermedChunk]]]:
    """Each document read (a path: from disk, size checked first), chunked, and its chunks termed.

    Every document is tried before any refusal, so one `UnsupportedDocument` names all that cannot be
    read (a path as given, a `SourceDocument` by its source), one per line."""
    prepared = []
    refused: list[str] = []
    for document in documents:
        try:
            if isinstance(document, SourceDocument):
                doc, name = document, document.source
            else:
                doc, name = SourceDocument.from_path(document), str(document)
            chunks = chunk_sections(read_sections(doc.data, doc.format, name))
        except UnsupportedDocument as exc:
            refused.append(str(exc))
            continue
        prepared.append((doc, [(chunk, sorted(term_counts(chunk.indexed_text))) for chunk in chunks]))
    if refused:
        raise UnsupportedDocument("\n".join(refused))
    return prepared


def _one(row: dict[str, Any] | None) -> dict[str, Any]:
    """The row a statement always returns (kb_state has exactly one)."""
    if row is None:
        raise KnowledgeBaseError(
            "知识库的状态行缺失：运行 wxkf db upgrade / the knowledge base's state row is missing"
        )
    return row


def _candidate_terms(terms: Sequence[tuple[str, float]], stats: CorpusStats) -> tuple[list[str], list[str]]:
    """Which chunks the lexical half scores: those with any of the first list, or all of the second.

    Any of the rarest terms whose chunks add up to the budget; when even the rarest term is in more
    chunks than that, chunks holding the two rarest terms together.
    """
    ordered = sorted((t for t, _ in terms), key=lambda t: stats.df.get(t, 0))
    if stats.df.get(ordered[0], 0) > LEXICAL_CANDIDATE_BUDGET:
        return [], ordered[:2]
    chosen: list[str] = []
    total = 0
    for term in ordered:
        total += stats.df.get(term, 0)
        if chosen and total > LEXICAL_CANDIDATE_BUDGET:
            break
        chosen.append(term)
    return chosen, []


def _array_literal(items: Sequence[str]) -> str:
    """A PostgreSQL text[] literal (for unnest over an array of arrays, which psycopg cannot send)."""
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"


def _vector_literal(vector: Sequence[float]) -> str:
    try:
        return vector_literal(vector)
    except ValueError as exc:
        raise KnowledgeBaseError(str(exc)) from exc


async def _ensure_hnsw(cur: Cursor, dim: int) -> None:
    # One partial index per dimension in use (the 1024 one ships in the migration). pgvector's HNSW
    # supports at most 2000 dimensions; beyond that search scans.
    if dim <= 2000:
        await cur.execute(_ENSURE_HNSW.format(dim=dim))
