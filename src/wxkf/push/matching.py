"""Matching jobs: an intent against the profiles, or new profiles against the intents.

    embed the row(s) the job is about, commit          (so a concurrent job of the other kind sees it)
    candidates  = nearest profiles by vector (HNSW)    ┐ both within the SQL pre-filter of the
                ∪ profiles that hold every keyword (GIN) ┘ required / excluded conditions
    each candidate: gates and score in Python (`scoring.score`), the threshold
    the best few: the LLM re-checks them (optional, `rerank`)
    INSERT … ON CONFLICT DO NOTHING per (intent version, profile version): a pair is scored once

Pairs below the threshold leave no row (scoring them again gives the same result); a pair the LLM
judged keeps its row whatever the verdict, so the model is asked once per pair. A profile already
pushed for an intent is recorded as `retired` (already_pushed) when it matches again in a new version.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from wxkf.agent.llm import LLMClient
from wxkf.clock import Clock
from wxkf.push import rerank
from wxkf.push.conditions import Conditions, needle_terms, sql_gates
from wxkf.push.models import Owner
from wxkf.push.scoring import Scored, Weights, score
from wxkf.push.store import PROFILE_FIELDS, as_condition_profile
from wxkf.push.vectors import Vectors

log = logging.getLogger("wxkf.push.matching")

KEYWORD_CANDIDATES = 50  # profiles mentioning every keyword, read per intent through GIN, at most
_PROFILE_READ = (
    "p.id, p.version, p.name, p.gender, p.age, p.city, p.company, p.position, p.industry, p.education, "
    "p.attributes, p.description, p.tags"
)
_INTENT_READ = "i.id, i.version, i.open_kfid, i.external_userid, i.name, i.description, i.conditions, i.threshold, i.template"

# {gates}: the required/excluded pre-filter; {dim}: the vector dimension (the partial HNSW index's).
# The nearest profiles through HNSW: pgvector walks the graph and applies the gates to what it finds.
_NEAREST = """
SELECT {columns}, 1 - (p.embedding::vector({dim}) <=> %(q)s::vector({dim})) AS similarity
FROM push_profiles p
WHERE p.status = 'active' AND p.embedder = %(embedder)s AND vector_dims(p.embedding) = {dim} AND {gates}
ORDER BY p.embedding::vector({dim}) <=> %(q)s::vector({dim})
LIMIT %(k)s
"""
# The same, exactly, over the profiles the gates leave (found through the gates' own indexes): when
# they leave few, HNSW would walk past most of its candidates to keep a handful.
_NEAREST_EXACT = """
SELECT {columns}, 1 - (p.embedding::vector({dim}) <=> %(q)s::vector({dim})) AS similarity
FROM push_profiles p
WHERE p.status = 'active' AND p.embedder = %(embedder)s AND vector_dims(p.embedding) = {dim} AND {gates}
ORDER BY similarity DESC
LIMIT %(k)s
"""
_MENTIONING = """
SELECT {columns},
       CASE WHEN vector_dims(p.embedding) = {dim}
            THEN 1 - (p.embedding::vector({dim}) <=> %(q)s::vector({dim})) END AS similarity
FROM push_profiles p
WHERE p.status = 'active' AND p.embedder = %(embedder)s AND p.terms @> %(terms)s::text[] AND {gates}
LIMIT %(budget)s
"""
_GATED_ESTIMATE = "EXPLAIN (FORMAT JSON) SELECT 1 FROM push_profiles p WHERE p.status = 'active' AND {gates}"
_RECORDED = (
    "SELECT profile_id, profile_version FROM push_matches WHERE intent_id = %s AND intent_version = %s"
)
# Below this many profiles left by the gates (the planner's estimate, reached through an index) the
# search is exact; above it HNSW, searching at most MAX_EF_SEARCH deep (benchmarks/README.md, push).
EXACT_BELOW = 2_000
MAX_EF_SEARCH = 100
PLAN_SECONDS = 600.0
_INTENT_FOR_MATCHING = f"""
SELECT {_INTENT_READ}, i.embedding::text AS embedding, i.embedder, i.status, i.expires_at
FROM push_intents i WHERE i.id = %s
"""
# Every active intent's similarity to each of the given profiles (a chunk of an import, or one).
_INTENTS_FOR_PROFILES = f"""
SELECT p.id AS profile_id, {_INTENT_READ},
       CASE WHEN vector_dims(i.embedding) = vector_dims(p.embedding)
            THEN 1 - (i.embedding <=> p.embedding) END AS similarity
FROM push_profiles p
JOIN push_intents i ON i.status = 'active' AND (i.expires_at IS NULL OR i.expires_at > %(now)s)
                    AND i.embedder = %(embedder)s
WHERE p.id = ANY(%(ids)s::bigint[]) AND p.status = 'active' AND p.embedder = %(embedder)s
  AND NOT EXISTS (SELECT 1 FROM push_matches m WHERE m.intent_id = i.id AND m.intent_version = i.version
                  AND m.profile_id = p.id AND m.profile_version = p.version)
"""
_PROFILES_BY_ID = f"SELECT {_PROFILE_READ} FROM push_profiles p WHERE p.id = ANY(%s::bigint[])"
_INSERT_MATCH = """
INSERT INTO push_matches (intent_id, intent_version, profile_id, profile_version, open_kfid, external_userid,
                          score, parts, matched, explanation, status, reason)
SELECT %(intent_id)s, %(intent_version)s, %(profile_id)s, %(profile_version)s, %(open_kfid)s,
       %(external_userid)s, %(score)s, %(parts)s, %(matched)s, %(explanation)s,
       CASE WHEN %(status)s = 'pending' AND EXISTS (
                SELECT 1 FROM push_matches d WHERE d.intent_id = %(intent_id)s AND d.profile_id = %(profile_id)s
                AND d.status = 'pushed') THEN 'retired' ELSE %(status)s END,
       CASE WHEN %(status)s = 'pending' AND EXISTS (
                SELECT 1 FROM push_matches d WHERE d.intent_id = %(intent_id)s AND d.profile_id = %(profile_id)s
                AND d.status = 'pushed') THEN 'already_pushed' ELSE %(reason)s END
ON CONFLICT ON CONSTRAINT uq_push_matches_pair DO NOTHING
RETURNING id, status
"""


@dataclass(frozen=True)
class Candidate:
    profile: dict[str, Any]
    scored: Scored


@dataclass
class MatchRun:
    """What one job did: pairs scored, matches recorded, and whose deliveries to start."""

    scored: int = 0
    recorded: int = 0
    rejected: int = 0
    owners: set[tuple[str, str]] | None = None

    def __post_init__(self) -> None:
        if self.owners is None:
            self.owners = set()


class Matcher:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        vectors: Vectors,
        *,
        weights: Weights,
        default_threshold: float,
        semantic_candidates: int,
        top_candidates: int,
        llm: LLMClient | None,
        llm_weight: float,
        clock: Clock,
    ) -> None:
        self._pool = pool
        self._vectors = vectors
        self._weights = weights
        self._default_threshold = default_threshold
        self._k = semantic_candidates
        self._top = top_candidates
        self._llm = llm
        self._llm_weight = llm_weight
        self._clock = clock
        self._plans: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, tuple[bool, int]]] = {}

    # --- an intent against the profiles -----------------------------------------------------------

    async def match_intent(self, intent_id: int) -> MatchRun:
        await self._vectors.current()
        async with self._pool.connection() as conn:
            await self._vectors.embed_stale(conn, [], [intent_id])
            cur = await conn.cursor(row_factory=dict_row).execute(_INTENT_FOR_MATCHING, (intent_id,))
            intent = await cur.fetchone()
        run = MatchRun()
        if intent is None or intent["status"] != "active" or _expired(intent["expires_at"], self._clock()):
            return run
        candidates = await self.candidates(intent)
        run.scored = len(candidates)
        passing = sorted(
            (c for c in candidates if c.scored.score >= intent["threshold"]),
            key=lambda c: (-c.scored.score, c.profile["id"]),
        )[: self._top]
        await self._record(intent, passing, run)
        return run

    async def candidates(self, intent: dict[str, Any]) -> list[Candidate]:
        """Every profile the intent's SQL pre-filter and candidate search give, scored (not yet recorded)."""
        conditions = Conditions.model_validate(intent["conditions"])
        vector = literal_floats(intent["embedding"])
        dim = len(vector)
        gates, params = sql_gates(conditions)
        gated = bool(conditions.required or conditions.excluded)
        # One term per keyword, its most telling (a word, or a pair of characters), finds candidates.
        keyword_terms = sorted({max(needle_terms(k), key=len) for k in conditions.keywords})
        params.update({"embedder": intent["embedder"], "q": intent["embedding"], "k": self._k})
        columns, dimension = sql.SQL(_PROFILE_READ), sql.Literal(dim or 1)
        rows: list[dict[str, Any]] = []
        async with self._pool.connection() as conn:
            exact, ef_search = False, max(40, self._k)
            if gated and dim:
                exact, ef_search = await self._search_plan(conn, gates, params)
            # One round trip: the search width (the pooled connection's setting, set before every
            # search, read only by HNSW scans), the two candidate searches, the pairs already scored.
            async with conn.pipeline():
                await conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(ef_search),))
                nearest = conn.cursor(row_factory=dict_row)
                mentioning = conn.cursor(row_factory=dict_row)
                recorded = conn.cursor()
                if dim:
                    await nearest.execute(
                        sql.SQL(_NEAREST_EXACT if exact else _NEAREST).format(
                            gates=gates, dim=dimension, columns=columns
                        ),
                        params,
                    )
                if keyword_terms:
                    await mentioning.execute(
                        sql.SQL(_MENTIONING).format(gates=gates, dim=dimension, columns=columns),
                        {
                            **params,
                            "terms": keyword_terms,
                            "budget": KEYWORD_CANDIDATES,
                            "q": intent["embedding"] or "[0]",
                        },
                    )
                await recorded.execute(_RECORDED, (intent["id"], intent["version"]))
                if dim:
                    rows += await nearest.fetchall()
                if keyword_terms:
                    rows += await mentioning.fetchall()
                done = set(await recorded.fetchall())
        found: list[Candidate] = []
        seen: set[int] = set()
        for row in rows:
            if row["id"] in seen or (row["id"], row["version"]) in done:
                continue
            seen.add(row["id"])
            scored = self._score(conditions, row, row["similarity"])
            if scored is not None:
                found.append(Candidate(row, scored))
        return found

    def _score(
        self, conditions: Conditions, profile: dict[str, Any], similarity: float | None
    ) -> Scored | None:
        return score(
            conditions,
            as_condition_profile(profile),
            similarity=similarity,
            similarity_range=self._vectors.similarity_range,
            weights=self._weights,
        )

    async def _search_plan(
        self, conn: AsyncConnection[Any], gates: sql.Composable, params: dict[str, Any]
    ) -> tuple[bool, int]:
        """`_plan_search`, remembered for PLAN_SECONDS per set of gates: the estimate moves with the
        statistics, not with each intent (most intents share a few cities and ranges)."""
        key = (
            gates.as_string(conn),
            tuple(sorted((k, repr(v)) for k, v in params.items() if k not in ("q",))),
        )
        now = time.monotonic()
        cached = self._plans.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        plan = await self._plan_search(conn, gates, params)
        if len(self._plans) >= 10_000:
            self._plans.clear()
        self._plans[key] = (now + PLAN_SECONDS, plan)
        return plan

    async def _plan_search(
        self, conn: AsyncConnection[Any], gates: sql.Composable, params: dict[str, Any]
    ) -> tuple[bool, int]:
        """(exact?, hnsw.ef_search) from the planner's estimate of the profiles the gates leave.

        Few and found through an index: exact. Many: HNSW, searching wider the more the gates filter
        out (pgvector applies them after the graph walk), up to MAX_EF_SEARCH: a gate that leaves a
        tenth of 100,000 profiles gets about half of k candidates from the graph, not k.
        """
        cur = await conn.execute(sql.SQL(_GATED_ESTIMATE).format(gates=gates), params)
        row = await cur.fetchone()
        plan = row[0][0]["Plan"] if row else {}
        estimate = float(plan.get("Plan Rows", 0))
        # The exact search reads every row the index hands over, before the other gates filter them:
        # the largest node of the plan bounds that work, its last node only what survives.
        nodes = list(_plan_nodes(plan))
        read = max((float(n.get("Plan Rows", 0)) for n in nodes), default=estimate)
        if read <= EXACT_BELOW and all(n.get("Node Type") != "Seq Scan" for n in nodes):
            return True, self._k
        total = await (
            await conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'push_profiles'::regclass")
        ).fetchone()
        share = estimate / max(float(total[0]) if total else estimate, estimate, 1.0)
        return False, int(min(MAX_EF_SEARCH, max(40, self._k / max(share, 0.01))))

    # --- new or changed profiles against the intents ----------------------------------------------

    async def match_profiles(self, profile_ids: list[int]) -> MatchRun:
        await self._vectors.current()
        async with self._pool.connection() as conn:
            await self._vectors.embed_stale(conn, profile_ids)
            pairs = await conn.cursor(row_factory=dict_row).execute(
                _INTENTS_FOR_PROFILES,
                {"ids": profile_ids, "now": self._clock(), "embedder": self._vectors.version},
            )
            rows = await pairs.fetchall()
            profiles = {
                r["id"]: r
                for r in await (
                    await conn.cursor(row_factory=dict_row).execute(_PROFILES_BY_ID, (profile_ids,))
                ).fetchall()
            }
        run = MatchRun(scored=len(rows))
        per_intent: dict[int, tuple[dict[str, Any], list[Candidate]]] = {}
        parsed: dict[int, Conditions] = {}
        for row in rows:
            profile = profiles[row["profile_id"]]
            conditions = parsed.get(row["id"]) or parsed.setdefault(
                row["id"], Conditions.model_validate(row["conditions"])
            )
            scored = self._score(conditions, profile, row["similarity"])
            if scored is not None and scored.score >= row["threshold"]:
                entry = per_intent.setdefault(row["id"], (row, []))
                entry[1].append(Candidate(profile, scored))
        for intent, candidates in per_intent.values():
            best = sorted(candidates, key=lambda c: (-c.scored.score, c.profile["id"]))[: self._top]
            await self._record(intent, best, run)
        return run

    # --- recording ----------------------------------------------------------------------------------

    async def _record(self, intent: dict[str, Any], candidates: list[Candidate], run: MatchRun) -> None:
        rows = []
        for candidate in candidates:
            status, reason, scored = "pending", None, candidate.scored
            if self._llm is not None:
                status, reason, scored = await self._review(intent, candidate)
            rows.append((candidate, status, reason, scored))
        if not rows:
            return
        async with self._pool.connection() as conn, conn.transaction():
            for candidate, status, reason, scored in rows:
                recorded = await self._insert(conn, intent, candidate.profile, scored, status, reason)
                if recorded == "pending":
                    run.recorded += 1
                    assert run.owners is not None
                    run.owners.add((intent["open_kfid"], intent["external_userid"]))
                elif recorded == "rejected":
                    run.rejected += 1
        log.info(
            "意图 %s 匹配：%d 个新匹配 / intent %s matched %d new profile(s)",
            intent["id"],
            run.recorded,
            intent["id"],
            run.recorded,
            extra={"decision": "push_matched"},
        )

    async def _review(self, intent: dict[str, Any], candidate: Candidate) -> tuple[str, str | None, Scored]:
        assert self._llm is not None
        scored = candidate.scored
        profile = {
            k: v
            for k, v in candidate.profile.items()
            if k not in ("id", "version", "similarity") and v not in (None, "", [], {})
        }
        request = {
            "name": intent["name"],
            "description": intent["description"],
            "conditions": intent["conditions"],
        }
        verdict = await rerank.review(self._llm, request, profile, scored.explanation)
        if verdict is None:
            return "rejected", "llm_unparseable", scored
        combined = round((1 - self._llm_weight) * scored.score + self._llm_weight * verdict.score, 4)
        judged = Scored(
            combined, {**scored.parts, "llm": verdict.score}, scored.matched, f"模型判断：{verdict.reason}"
        )
        if not verdict.match:
            return "rejected", "llm_rejected", judged
        if combined < intent["threshold"]:
            return "rejected", "llm_lowered", judged
        return "pending", None, judged

    async def _insert(
        self,
        conn: AsyncConnection[Any],
        intent: dict[str, Any],
        profile: dict[str, Any],
        scored: Scored,
        status: str,
        reason: str | None,
    ) -> str | None:
        cur = await conn.execute(
            _INSERT_MATCH,
            {
                "intent_id": intent["id"],
                "intent_version": intent["version"],
                "profile_id": profile["id"],
                "profile_version": profile["version"],
                "open_kfid": intent["open_kfid"],
                "external_userid": intent["external_userid"],
                "score": scored.score,
                "parts": Jsonb(scored.parts),
                "matched": Jsonb(scored.matched),
                "explanation": scored.explanation,
                "status": status,
                "reason": reason,
            },
        )
        row = await cur.fetchone()
        return None if row is None else str(row[1])


def _plan_nodes(node: dict[str, Any]) -> Any:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def literal_floats(text: str | None) -> list[float]:
    """A pgvector text literal back as floats ([] for none)."""
    return [float(x) for x in text.strip("[]").split(",")] if text else []


def _expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and expires_at <= now


def owners_of(run: MatchRun) -> list[Owner]:
    return [Owner(open_kfid=k, external_userid=u) for k, u in sorted(run.owners or ())]


__all__ = ["PROFILE_FIELDS", "Candidate", "MatchRun", "Matcher", "owners_of"]
