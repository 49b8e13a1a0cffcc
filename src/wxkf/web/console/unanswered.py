"""What the bot could not answer: recorded as it happens, grouped by similarity, turned into entries.

`RecordingResponder` wraps the service's responder (`wxkf.service.agent_responder`): a customer
question that got a hand-off, or an answer without any knowledge-base source, becomes a row of
`console_unanswered` (greetings and "转人工" requests are not questions). Recording is one INSERT
after the reply is decided; a failure is logged and never costs the customer the answer.

The console groups new rows when it shows them: each question is embedded with the knowledge base's
embedder and joins the open group whose first question is most alike, when the cosine reaches twice
the embedder's own "same question" similarity (`group_similarity`), or starts one. A group offers as its answer the first thing a staff member sent one of its customers
after the question and before that customer wrote again — from the console in a takeover, or from
the WeCom client — and one click turns
it into a Markdown entry of the knowledge base.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from wxkf.agent.prompts import ASK_HUMAN_RE, small_talk
from wxkf.kf.responder import Reply, ReplyRequest, Responder

if TYPE_CHECKING:
    from wxkf.agent.kb.embedders import Embedder

log = logging.getLogger("wxkf.console.unanswered")

GROUP_BATCH = 500
_GROUP_LOCK = 0x636F6E55  # "conU": one grouping pass at a time across replicas

_RECORD = """
INSERT INTO console_unanswered (open_kfid, external_userid, msgid, question, kind)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT (open_kfid, msgid) DO NOTHING
"""


def unanswered_kind(request: ReplyRequest, reply: Reply) -> str | None:
    """'handoff', 'no_answer', or None when the question was answered (or was not a question)."""
    question = question_of(request)
    if not question or small_talk(question) is not None or ASK_HUMAN_RE.search(question):
        return None
    if reply.handoff:
        return "handoff"
    if not reply.sources:
        return "no_answer"
    return None


def question_of(request: ReplyRequest) -> str:
    return "\n".join(m.text.strip() for m in request.messages if m.text.strip())


class RecordingResponder:
    """A responder that also records what it could not answer."""

    def __init__(self, inner: Responder, pool: AsyncConnectionPool[Any]) -> None:
        self.inner = inner
        self.pool = pool

    async def respond(self, request: ReplyRequest) -> Reply:
        reply = await self.inner.respond(request)
        kind = unanswered_kind(request, reply)
        if kind is not None:
            conversation = request.conversation
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(
                        _RECORD,
                        (
                            conversation.open_kfid,
                            conversation.external_userid,
                            request.messages[-1].msgid,
                            question_of(request)[:2000],
                            kind,
                        ),
                    )
            except Exception as exc:  # the customer's answer matters more than the record
                log.warning("未解答问题未记录 / unanswered question not recorded: %s", type(exc).__name__)
        return reply

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


# --- grouping -------------------------------------------------------------------------------------

_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_UNGROUPED = "SELECT id, question FROM console_unanswered WHERE group_id IS NULL ORDER BY id LIMIT %s"
_OPEN_GROUPS = (
    "SELECT id, vector FROM console_unanswered_groups WHERE resolved_at IS NULL AND embedder_version = %s"
)
_NEW_GROUP = "INSERT INTO console_unanswered_groups (question, vector, embedder_version) VALUES (%s, %s, %s) RETURNING id"
_JOIN = "UPDATE console_unanswered SET group_id = %s WHERE id = %s"


def group_similarity(embedder: Embedder) -> float:
    """Two questions are alike at the similarity the embedder calls "the same question" (the top of
    its `similarity_range`).

    With the hashing embedder (0.26): 支持花呗吗 / 可以用花呗付款吗 0.39, unrelated pairs under 0.2.
    """
    return embedder.similarity_range[1]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        return 0.0
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm else 0.0


async def group_new(pool: AsyncConnectionPool[Any], embedder: Embedder) -> int:
    """Put ungrouped questions into groups; returns how many were placed."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(_LOCK, (_GROUP_LOCK,))
        rows = await (await conn.execute(_UNGROUPED, (GROUP_BATCH,))).fetchall()
        if not rows:
            return 0
        vectors = await embedder.embed([str(r[1]) for r in rows])
        groups: list[tuple[int, list[float]]] = [
            (int(g[0]), [float(x) for x in g[1]])
            for g in await (await conn.execute(_OPEN_GROUPS, (embedder.version,))).fetchall()
        ]
        alike = group_similarity(embedder)
        for (row_id, question), vector in zip(rows, vectors, strict=True):
            best = max(groups, key=lambda g: cosine(g[1], vector), default=None)
            if best is not None and cosine(best[1], vector) >= alike:
                group_id = best[0]
            else:
                created = await (
                    await conn.execute(_NEW_GROUP, (question, vector, embedder.version))
                ).fetchone()
                assert created is not None  # RETURNING id
                group_id = int(created[0])
                groups.append((group_id, list(vector)))
            await conn.execute(_JOIN, (group_id, row_id))
        return len(rows)


@dataclass(frozen=True)
class Group:
    id: int
    question: str
    count: int
    handoffs: int
    last_asked: datetime
    examples: list[str]
    suggested_answer: str
    answered_by: str


# The first text a person sent one of the group's customers after their question and before that
# customer wrote again (a reply after a later message answers that one): a console reply (kf_outbox
# kind 'staff') or a servicer's message from the WeCom client (kf_inbound origin 5). Every time here
# is the database's clock (asked_at, created_at, recorded_at), never WeCom's send_time.
_NEXT_MESSAGE = (
    "coalesce((SELECT min(n.recorded_at) FROM kf_inbound n WHERE n.open_kfid = q.open_kfid"
    " AND n.external_userid = q.external_userid AND n.origin = 3 AND n.recorded_at > q.asked_at),"
    " 'infinity')"
)
_GROUPS = f"""
SELECT g.id, g.question, count(u.id) AS count, count(u.id) FILTER (WHERE u.kind = 'handoff') AS handoffs,
       max(u.asked_at) AS last_asked,
       (array_agg(DISTINCT u.question))[1:5] AS examples,
       a.text AS suggested_answer, a.who AS answered_by
FROM console_unanswered_groups g
JOIN console_unanswered u ON u.group_id = g.id
LEFT JOIN LATERAL (
    SELECT text, who FROM (
        SELECT o.body ->> 'content' AS text, 'staff' AS who, o.created_at AS at
        FROM console_unanswered q JOIN kf_outbox o
          ON o.open_kfid = q.open_kfid AND o.external_userid = q.external_userid
         AND o.kind = 'staff' AND o.status <> 'failed' AND o.created_at >= q.asked_at
         AND o.created_at < {_NEXT_MESSAGE}
        WHERE q.group_id = g.id
        UNION ALL
        SELECT i.body -> 'body' ->> 'content', 'servicer', i.recorded_at
        FROM console_unanswered q JOIN kf_inbound i
          ON i.open_kfid = q.open_kfid AND i.external_userid = q.external_userid
         AND i.origin = 5 AND i.msgtype = 'text' AND i.recorded_at >= q.asked_at
         AND i.recorded_at < {_NEXT_MESSAGE}
        WHERE q.group_id = g.id
    ) answers WHERE text <> '' ORDER BY at LIMIT 1
) a ON true
WHERE g.resolved_at IS NULL
GROUP BY g.id, a.text, a.who
ORDER BY count(u.id) DESC, max(u.asked_at) DESC
LIMIT %s
"""
_GROUP = "SELECT id, question, resolved_at FROM console_unanswered_groups WHERE id = %s"
_GROUP_QUESTIONS = "SELECT DISTINCT question FROM console_unanswered WHERE group_id = %s ORDER BY 1 LIMIT 20"
_RESOLVE = "UPDATE console_unanswered_groups SET resolved_at = now(), resolved_by = %s, document_id = %s WHERE id = %s"


async def open_groups(pool: AsyncConnectionPool[Any], limit: int = 100) -> list[Group]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GROUPS, (limit,))
        return [
            Group(
                id=r["id"],
                question=r["question"],
                count=r["count"],
                handoffs=r["handoffs"],
                last_asked=r["last_asked"],
                examples=[e for e in r["examples"] or [] if e],
                suggested_answer=r["suggested_answer"] or "",
                answered_by=r["answered_by"] or "",
            )
            for r in await cur.fetchall()
        ]


def entry_markdown(question: str, answer: str, also_asked: Sequence[str]) -> str:
    """The knowledge-base entry for a group: the question as the heading, the answer, the other ways
    customers asked it (they help the search find the entry)."""
    others = [q for q in also_asked if q.strip() and q.strip() != question.strip()]
    lines = [f"# {question.strip()}", "", answer.strip(), ""]
    if others:
        lines += ["相似问法 / also asked: " + "；".join(q.strip().replace("\n", " ") for q in others), ""]
    return "\n".join(lines)


class UnansweredRefusal(Exception):
    """The group cannot become an entry; the message says why."""


async def group_questions(pool: AsyncConnectionPool[Any], group_id: int) -> tuple[str, list[str]]:
    async with pool.connection() as conn:
        row = await (await conn.execute(_GROUP, (group_id,))).fetchone()
        if row is None:
            raise UnansweredRefusal("没有这个问题组 / no such group")
        if row[2] is not None:
            raise UnansweredRefusal("该问题组已转为知识条目 / this group is already an entry")
        questions = [str(r[0]) for r in await (await conn.execute(_GROUP_QUESTIONS, (group_id,))).fetchall()]
    return str(row[1]), questions


async def resolve(pool: AsyncConnectionPool[Any], group_id: int, document_id: int | None, by: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(_RESOLVE, (by, document_id, group_id))
