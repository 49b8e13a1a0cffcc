"""What the agent can do right now, for start-up, `/ready` and `doctor` (psycopg, one short query each).

knowledge base   empty → every question is unknown: `wxkf kb add`
                 stale → embedded by another model than the configured one: `wxkf kb reindex`
LLM              a failure recorded in `agent_llm_failures` lately → customers get the offline
                 knowledge-base answer meanwhile (a wrong key, an outage)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from wxkf.agent.kb.embedders import Embedder
from wxkf.agent.kb.store import STATUS_SQL, KnowledgeBaseStatus

LLM_FAILURE_WINDOW_MINUTES = 15

_KB_STATE = "SELECT (SELECT count(*) FROM kb_documents), n_chunks, embedder_version, generation FROM kb_state"
_LAST_LLM_FAILURE = """
SELECT kind, status_code, detail, failed_at, count(*) OVER () FROM agent_llm_failures
WHERE failed_at > now() - make_interval(mins => %s) ORDER BY failed_at DESC LIMIT 1
"""


async def read_knowledge_status(conn: AsyncConnection[Any], embedder: Embedder) -> KnowledgeBaseStatus:
    cur = await conn.execute(STATUS_SQL)
    row = await cur.fetchone()
    assert row is not None  # kb_state has its one row from the migration on
    return KnowledgeBaseStatus.from_row(row, embedder)


def knowledge_problem(status: KnowledgeBaseStatus) -> tuple[str, str] | None:
    """(what is wrong, the fix), Chinese first; None when the knowledge base can answer."""
    if status.empty:
        return (
            "知识库为空：每个问题都会回答「不确定」/ the knowledge base is empty: every question is unknown",
            "用 wxkf kb add 文件或目录 添加常见问题文档（Markdown、文本、HTML、PDF）/ "
            "add your FAQ documents with `wxkf kb add FILE_OR_DIR`",
        )
    if status.stale:
        return (
            f"知识库由另一个向量模型生成（{status.stored_version}），当前为 {status.current_version}，"
            "检索暂停 / embedded by another model than the configured one: search is paused",
            "运行 wxkf kb reindex 用当前模型重新向量化 / run `wxkf kb reindex`",
        )
    return None


@dataclass(frozen=True)
class LLMFailure:
    kind: str
    status_code: int | None
    detail: str
    failed_at: datetime
    recent: int  # failures within the window


async def recent_llm_failure(
    conn: AsyncConnection[Any], minutes: float = LLM_FAILURE_WINDOW_MINUTES
) -> LLMFailure | None:
    cur = await conn.execute(_LAST_LLM_FAILURE, (minutes,))
    row = await cur.fetchone()
    return LLMFailure(*row) if row else None
