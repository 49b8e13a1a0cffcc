"""The assembled service: the conversation pipeline with the agent as its responder.

`wxkf.kf` knows only the responder seam (`kf/responder.py`) and `wxkf.agent` knows nothing of
procrastinate, so the two meet here, at the top, where `wxkf serve` and `wxkf worker` start them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from wxkf import _loop
from wxkf.config import Settings
from wxkf.db.engine import Database
from wxkf.kf.responder import Responder
from wxkf.kf.runtime import Pipeline, PipelineNotConfigured

if TYPE_CHECKING:
    from wxkf.agent.kb import KnowledgeBase
    from wxkf.push.service import PushService

log = logging.getLogger("wxkf.service")


@contextlib.asynccontextmanager
async def agent_responder(
    settings: Settings, database: Database, pipeline: Pipeline, push: PushService | None = None
) -> AsyncIterator[Responder]:
    """The LLM responder when a key is configured, else the offline one, both on the knowledge base.

    With WeCom configured, the LLM gets the kf tools (transfer to a human, end, profile) on the
    pipeline's own client; with `push`, the intent tools (create_intent, list_my_intents, cancel_intent).
    """
    from wxkf.agent.kb import KnowledgeBase
    from wxkf.agent.responder import build_responder

    try:
        wecom = pipeline.client
    except PipelineNotConfigured:
        wecom = None
    more_tools = []
    if push is not None:
        from wxkf.push.tools import customer_tools

        more_tools = customer_tools(push)
    knowledge = KnowledgeBase.from_settings(database, settings, media_store=pipeline.media_store)
    from wxkf.web.console.unanswered import RecordingResponder

    # What the bot could not answer goes to the console's list of unanswered questions.
    responder = RecordingResponder(
        build_responder(
            settings,
            database,
            retriever=knowledge,
            wecom=wecom,
            upgrade=wecom,
            more_tools=more_tools,
            accounts=pipeline.accounts,
        ),
        pipeline.pool,
    )
    reindexing = await check_knowledge_base(knowledge)
    try:
        yield responder
    finally:
        if reindexing is not None:
            reindexing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reindexing
        await responder.aclose()
        await knowledge.aclose()


async def check_knowledge_base(knowledge: KnowledgeBase) -> asyncio.Task[None] | None:
    """Say out loud at start what the bot cannot answer from; re-embed in the background after a
    model change (searches say "don't know" until it is done, never mixing two models' vectors)."""
    from wxkf.agent.kb.store import KnowledgeBaseStatus

    status: KnowledgeBaseStatus = await knowledge.status()
    if status.empty:
        log.warning(
            "⚠️ 知识库为空：机器人对每个问题都会回答「不确定」。用 wxkf kb add 文件 添加常见问题文档 / "
            'the knowledge base is empty: every customer question gets "I\'m not sure"; add documents '
            "with `wxkf kb add FILE`"
        )
        return None
    if not status.stale:
        log.info(
            "知识库 / knowledge base: %d documents, %d chunks, embedder %s",
            status.documents,
            status.chunks,
            status.embedder,
        )
        return None
    log.warning(
        "⚠️ 知识库由另一个向量模型生成（%s），正在用 %s 重新向量化 %d 个片段；完成前检索暂停 / re-embedding the "
        "knowledge base with the configured model; search is paused until it is done",
        status.stored_version,
        status.current_version,
        status.chunks,
    )

    def report(stage: str, done: int, total: int) -> None:
        if stage == "embed" and (done == total or done % 320 == 0):
            log.info("重新向量化 / re-embedding: %d/%d", done, total)

    async def reindex() -> None:
        try:
            count = await knowledge.reindex(report)
        except Exception:  # the service keeps answering ("don't know") and says why
            log.exception("重新向量化失败，请运行 wxkf kb reindex / re-embedding failed: run wxkf kb reindex")
            return
        log.info("✅ 知识库已重新向量化 %d 个片段 / re-embedded %d chunks", count, count)

    return asyncio.create_task(reindex())


async def run_worker(
    settings: Settings,
    *,
    concurrency: int | None = None,
    stalled_after: float = 10.0,
    announce: Callable[[str], object] = print,
) -> None:
    """`wxkf worker`: the pipeline's jobs with the agent answering, until a signal stops it."""
    database = await Database.open(settings)
    try:
        async with Pipeline(settings, database) as pipeline:
            pipeline.client  # noqa: B018 - fail at start, with the fix, when WeCom is not configured
            from wxkf.push.service import PushService

            push = PushService(settings, pipeline)
            try:
                async with agent_responder(settings, database, pipeline, push) as responder:
                    pipeline.use_responder(push.replies(responder))
                    _loop.freeze_heap()
                    announce(
                        f"✅ worker 已启动 / worker started (concurrency "
                        f"{concurrency or settings.kf_worker_concurrency}, responder {type(responder).__name__})"
                    )
                    await pipeline.run_worker(
                        concurrency=concurrency, stalled_after=stalled_after, install_signal_handlers=True
                    )
            finally:
                await push.aclose()
    finally:
        await database.close()
