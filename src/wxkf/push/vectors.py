"""Intent and profile vectors: made with the project's embedder, stamped with its version, indexed by HNSW.

Every vector carries the `embedder` version that made it. Comparisons only ever pair vectors of the
current embedder; `push_state.embedder` records the embedder that all stored vectors were made
with, so a process that meets another embedder (a new model, another dimension) re-embeds every
row first, under one advisory lock, before any job compares them. The HNSW index is partial per
dimension (`vector_dims(embedding) = d`), created when that dimension first appears.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from wxkf.agent.kb.embedders import Embedder
from wxkf.db.vectors import vector_literal
from wxkf.push.conditions import Conditions
from wxkf.push.scoring import match_similarity_range
from wxkf.push.store import embedding_text

log = logging.getLogger("wxkf.push.vectors")

_REEMBED_LOCK = 0x70757368  # "push": one re-embedding pass at a time across processes
BATCH = 256
HNSW_MAX_DIM = 2000  # pgvector's HNSW limit; beyond it similarity is computed without the index

_STATE = "SELECT embedder FROM push_state WHERE id = 1"
_SET_STATE = "UPDATE push_state SET embedder = %s WHERE id = 1"
_STALE_PROFILES = """
SELECT id, name, gender, age, city, company, position, industry, education, attributes, description, tags
FROM push_profiles WHERE status <> 'deleted' AND embedder IS DISTINCT FROM %s AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[]))
ORDER BY id LIMIT %s
"""
_STALE_INTENTS = """
SELECT id, name, description, conditions FROM push_intents
WHERE status <> 'cancelled' AND embedder IS DISTINCT FROM %s AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[]))
ORDER BY id LIMIT %s
"""
_STORE = sql.SQL(
    "UPDATE {table} AS t SET embedding = u.e::vector, embedder = %s "
    "FROM unnest(%s::bigint[], %s::text[]) AS u(id, e) WHERE t.id = u.id"
)


class Vectors:
    """The embedder as push uses it. `embedder_factory` is called once, on first use."""

    def __init__(self, pool: AsyncConnectionPool[Any], embedder_factory: Callable[[], Embedder]) -> None:
        self._pool = pool
        self._factory = embedder_factory
        self._embedder: Embedder | None = None
        self._checked: str | None = None  # the version known to match push_state
        self._dims: set[int] = set()
        self._lock = asyncio.Lock()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._factory()
        return self._embedder

    @property
    def version(self) -> str:
        return self.embedder.version

    @property
    def similarity_range(self) -> tuple[float, float]:
        """The intent ↔ profile similarities that mean unrelated and a strong fit (the semantic part's 0 and 1)."""
        return match_similarity_range(self.embedder)

    async def aclose(self) -> None:
        if self._embedder is not None:
            await self._embedder.aclose()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.embedder.embed(list(texts))

    async def current(self) -> None:
        """Make sure every stored vector is the current embedder's (re-embedding them if not)."""
        version = self.version
        if self._checked == version:
            return
        async with self._lock:
            if self._checked == version:
                return
            async with self._pool.connection() as conn:
                row = await (await conn.execute(_STATE)).fetchone()
                if row is None or row[0] != version:
                    await conn.execute("SELECT pg_advisory_lock(%s)", (_REEMBED_LOCK,))
                    try:
                        row = await (await conn.execute(_STATE)).fetchone()
                        if row is None or row[0] != version:
                            previous = row[0] if row else None
                            done = await self.embed_stale(conn, None)
                            if previous is not None:
                                log.warning(
                                    "向量模型已变更，已重新向量化 %d 条意图与资料 / the embedder changed (%s → %s): "
                                    "re-embedded %d intents and profiles",
                                    done,
                                    previous,
                                    version,
                                    done,
                                    extra={"decision": "push_reembed"},
                                )
                            await conn.execute(_SET_STATE, (version,))
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock(%s)", (_REEMBED_LOCK,))
            self._checked = version

    async def embed_stale(
        self,
        conn: AsyncConnection[Any],
        profile_ids: Sequence[int] | None,
        intent_ids: Sequence[int] | None = None,
    ) -> int:
        """Embed the given rows (None: every row) that lack a vector of the current embedder."""
        version = self.version
        done = 0
        ids = None if profile_ids is None else list(profile_ids)
        if profile_ids is None or ids:
            while True:
                cur = await conn.execute(_STALE_PROFILES, (version, ids, ids, BATCH))
                columns = [c.name for c in cur.description or []]
                rows = [dict(zip(columns, r, strict=True)) for r in await cur.fetchall()]
                if not rows:
                    break
                await self._store(
                    conn, "push_profiles", [r["id"] for r in rows], [embedding_text(r) for r in rows]
                )
                done += len(rows)
        ids = None if intent_ids is None and profile_ids is None else list(intent_ids or [])
        if ids is None or ids:
            while True:
                cur = await conn.execute(_STALE_INTENTS, (version, ids, ids, BATCH))
                intents = list(await cur.fetchall())
                if not intents:
                    break
                await self._store(
                    conn,
                    "push_intents",
                    [r[0] for r in intents],
                    [intent_text(r[1], r[2], r[3]) for r in intents],
                )
                done += len(intents)
        return done

    async def _store(self, conn: AsyncConnection[Any], table: str, ids: list[int], texts: list[str]) -> None:
        vectors = await self.embed(texts)
        for dim in {len(v) for v in vectors} - self._dims:
            await ensure_index(conn, dim)
            self._dims.add(dim)
        await conn.execute(
            _STORE.format(table=sql.Identifier(table)),
            (self.version, ids, [vector_literal(v) for v in vectors]),
        )


def intent_text(name: str, description: str, conditions: dict[str, Any]) -> str:
    """What an intent's vector is made from: its name, description and the words of its conditions."""
    return "\n".join(p for p in (name, description, Conditions.model_validate(conditions).values_text()) if p)


async def ensure_index(conn: AsyncConnection[Any], dim: int) -> None:
    """The partial HNSW index of profiles with `dim`-dimensional vectors (once per dimension)."""
    if dim > HNSW_MAX_DIM:
        return
    await conn.execute(
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {name} ON push_profiles USING hnsw "
            "((embedding::vector({dim})) vector_cosine_ops) WHERE vector_dims(embedding) = {dim}"
        ).format(name=sql.Identifier(f"ix_push_profiles_hnsw_{dim}"), dim=sql.Literal(dim))
    )
