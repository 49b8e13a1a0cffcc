"""The assembled service: the conversation pipeline with the agent as its responder.

`wxkf.kf` knows only the responder seam (`kf/responder.py`) and `wxkf.agent` knows nothing of
procrastinate, so the two meet here, at the top, where `wxkf serve` and `wxkf worker` start them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from wxkf import _loop
from wxkf.config import Settings
from wxkf.db.engine import Database
from wxkf.kf.responder import Responder
from wxkf.kf.runtime import Pipeline, PipelineNotConfigured

if TYPE_CHECKING:
    from wxkf.push.service import PushService


@contextlib.asynccontextmanager
async def agent_responder(
    settings: Settings, database: Database, pipeline: Pipeline, push: PushService | None = None
) -> AsyncIterator[Responder]:
    """The LLM responder when a key is configured, else the offline one, both on the knowledge base.

    With WeCom configured, the LLM gets the kf tools (transfer to a human, end, profile) on the
    pipeline's own client; with `push`, the intent tools (create_intent, list_my_intents, cancel_intent).
    """
    from wxkf.agent.kb import KnowledgeBase, make_embedder
    from wxkf.agent.responder import build_responder
    from wxkf.agent.tools import ToolAudit, ToolRegistry
    from wxkf.agent.tools_kf import kf_tools

    tools = ToolRegistry(ToolAudit(database))
    with contextlib.suppress(PipelineNotConfigured):
        tools.extend(kf_tools(pipeline.client))
    if push is not None:
        from wxkf.push.tools import customer_tools

        tools.extend(customer_tools(push))
    knowledge = KnowledgeBase(database, make_embedder(settings))
    responder = build_responder(settings, database, retriever=knowledge, tools=tools)
    try:
        yield responder
    finally:
        await responder.aclose()
        await knowledge.aclose()


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
        async with Pipeline(settings, database.conninfo) as pipeline:
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
