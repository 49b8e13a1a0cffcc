"""The agent's responders, behind the pipeline's seam (`wxkf.kf.responder.Responder`).

- `LLMResponder`: retrieves passages, recalls the conversation, tells the model the passages, their
  sources and the relevance decision and the message budget, and lets it call tools (at most
  `MAX_TOOL_ROUNDS` rounds). The model answers only from the passages: when they do not cover a
  factual question it answers `UNKNOWN_MARKER`, and the customer hears the knowledge base is silent
  (as offline). When the LLM fails even after its bounded retries (a wrong key, an outage), the
  customer gets the offline answer from the knowledge base instead; the failure goes to
  `agent_llm_failures` (read by /ready and doctor), a counter (`agent.llm_failure.<kind>`) and the
  log. Every model call's latency (failed ones too) goes to `kf_counters` as histogram buckets
  (`LatencyLog`), so /metrics shows the same figure whichever process answered.
- `OfflineResponder`: no LLM key. Answers with the best passage when it is relevant enough.

When the knowledge base is silent, `KF_UNKNOWN_ANSWER` decides: `say` answers that it does not know and
how to reach a person; `handoff` (the default) asks for a human, and the pipeline hands over only when
a servicer can receive, saying the `say` text otherwise (`Reply.unattended_text`).

`build_responder(settings, database, …)` picks the LLM when a key is configured, else offline.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Literal, Protocol

from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from sqlalchemy import text

from wxkf.agent.kb.embedders import EmbeddingError, make_embedder
from wxkf.agent.kb.store import KnowledgeBase, KnowledgeBaseError
from wxkf.agent.llm import Completion, LLMAuthError, LLMClient, LLMError
from wxkf.agent.memory import ConversationMemory, MemorySource, PipelineMemory, Speaker, Turn
from wxkf.agent.prompts import (
    ASK_HUMAN_RE,
    GREETING_RE,
    GREETING_TEXT,
    HANDOFF_TEXT,
    NO_HUMAN_TEXT,
    TRANSFER_TEXT,
    UNKNOWN_MARKER,
    UNKNOWN_TEXT,
    PassageLike,
    cite,
    offline_answer,
    system_prompt,
)
from wxkf.agent.tools import Audience, ToolAudit, ToolContext, ToolRegistry
from wxkf.agent.tools_kf import KfSessionApi, kf_tools
from wxkf.config import Settings
from wxkf.db.engine import Database
from wxkf.kf.responder import Conversation, Reply, ReplyRequest
from wxkf.ops.metrics import llm_latency_counters

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 4  # a model stuck calling tools gets one last turn without them
PASSAGES_PER_ANSWER = 4
UnknownAnswer = Literal["handoff", "say"]


class Retriever(Protocol):
    """The knowledge base as the responders use it (`wxkf.agent.kb.KnowledgeBase`)."""

    async def search(self, query: str, k: int) -> Sequence[PassageLike]: ...


def _query(request: ReplyRequest) -> str:
    return "\n".join(m.text for m in request.messages if m.text.strip())


async def _search(retriever: Retriever | None, query: str, k: int) -> Sequence[PassageLike]:
    """The retriever's passages; nothing when it cannot search now (the reason is logged)."""
    if retriever is None or not query:
        return []
    try:
        return await retriever.search(query, k)
    except (KnowledgeBaseError, EmbeddingError) as exc:
        # A knowledge base waiting for `wxkf kb reindex`, or an embedding endpoint down: the customer
        # hears the knowledge base is silent, the operator reads why (also in /ready and doctor).
        log.error("知识库无法检索 / the knowledge base cannot be searched: %s", exc)
        return []


class FailureLog:
    """Records that a customer got the fallback instead of an answer: table, counter and log."""

    def __init__(self, database: Database | None) -> None:
        self.database = database
        self.counts: Counter[str] = Counter()  # this process's view, for tests and `doctor`

    async def record(self, error: LLMError, conversation: Conversation, model: str) -> None:
        self.counts[error.kind] += 1
        level = logging.ERROR if isinstance(error, LLMAuthError) else logging.WARNING
        log.log(level, "LLM failed (%s): %s", error.kind, error.message)
        if self.database is None:
            return
        async with self.database.engine.begin() as conn:
            await conn.execute(
                text(
                    """
                    INSERT INTO agent_llm_failures
                        (kind, status_code, open_kfid, external_userid, model, detail)
                    VALUES (:kind, :status_code, :open_kfid, :external_userid, :model, :detail)
                    """
                ),
                {
                    "kind": error.kind,
                    "status_code": error.status_code,
                    "open_kfid": conversation.open_kfid,
                    "external_userid": conversation.external_userid,
                    "model": model,
                    "detail": error.message[:1000],
                },
            )
            # The pipeline's counters table is what the metrics export reads.
            await conn.execute(
                text(
                    "INSERT INTO kf_counters (name, value) VALUES (:name, 1) "
                    "ON CONFLICT (name) DO UPDATE SET value = kf_counters.value + 1"
                ),
                {"name": f"agent.llm_failure.{error.kind}"},
            )


class LatencyLog:
    """Adds each LLM call's latency to the histogram counters in `kf_counters`, in one statement."""

    def __init__(self, database: Database | None) -> None:
        self.database = database
        self.calls = 0  # this process's view, for tests

    async def record(self, seconds: float) -> None:
        self.calls += 1
        if self.database is None:
            return
        increments = llm_latency_counters(seconds)
        rows = ", ".join(f"(:name{i}, :value{i})" for i in range(len(increments)))
        params: dict[str, object] = {}
        for i, (name, value) in enumerate(increments.items()):
            params[f"name{i}"], params[f"value{i}"] = name, value
        try:
            async with self.database.engine.begin() as conn:
                await conn.execute(
                    text(
                        f"INSERT INTO kf_counters (name, value) VALUES {rows} "
                        "ON CONFLICT (name) DO UPDATE SET value = kf_counters.value + EXCLUDED.value"
                    ),
                    params,
                )
        except Exception as exc:  # a lost sample must not cost the customer their answer
            log.warning("LLM latency not recorded: %s", type(exc).__name__)


class OfflineResponder:
    """Answers from the knowledge base alone; what it cannot answer follows `KF_UNKNOWN_ANSWER`."""

    def __init__(self, retriever: Retriever | None, *, unknown_answer: UnknownAnswer = "handoff") -> None:
        self.retriever = retriever
        self.unknown_answer = unknown_answer

    async def respond(self, request: ReplyRequest) -> Reply:
        query = _query(request)
        if ASK_HUMAN_RE.search(query) or GREETING_RE.match(query):
            return self.reply_from(query, [])
        return self.reply_from(query, await _search(self.retriever, query, 1))

    def reply_from(self, query: str, passages: Sequence[PassageLike]) -> Reply:
        """The offline answer to `query` given the retrieved passages (the LLM's fallback too)."""
        if ASK_HUMAN_RE.search(query):
            return Reply(text=TRANSFER_TEXT, handoff=True, unattended_text=NO_HUMAN_TEXT, question=query)
        if GREETING_RE.match(query):
            # A greeting is not a question: answering it with "I'll pass this on" would queue the
            # customer for a human before they asked anything.
            return Reply(text=GREETING_TEXT)
        relevant = [p for p in passages if p.relevant]
        if relevant:
            best = relevant[0]
            return Reply(text=offline_answer(best), sources=[cite(best)])
        return self.unknown(query)

    def unknown(self, query: str) -> Reply:
        """The knowledge base is silent on `query`: say so, or ask for a human (`KF_UNKNOWN_ANSWER`)."""
        if self.unknown_answer == "say":
            return Reply(text=UNKNOWN_TEXT, question=query)
        return Reply(text=HANDOFF_TEXT, handoff=True, unattended_text=UNKNOWN_TEXT, question=query)

    async def aclose(self) -> None:
        return None


def _turn_message(turn: Turn) -> ChatCompletionMessageParam:
    if turn.speaker is Speaker.CUSTOMER:
        return {"role": "user", "content": turn.text}
    if turn.speaker is Speaker.SERVICER:
        who = f"人工客服 {turn.servicer_userid}" if turn.servicer_userid else "人工客服"
        return {"role": "assistant", "content": f"（{who}）{turn.text}"}
    return {"role": "assistant", "content": turn.text}


class LLMResponder:
    """Grounded answers from an LLM, with memory and tools."""

    def __init__(
        self,
        llm: LLMClient,
        *,
        retriever: Retriever | None,
        memory: ConversationMemory | None,
        tools: ToolRegistry,
        failures: FailureLog,
        persona: str = "",
        latency: LatencyLog | None = None,
        unknown_answer: UnknownAnswer = "handoff",
    ) -> None:
        self.offline = OfflineResponder(retriever, unknown_answer=unknown_answer)
        self.llm = llm
        self.latency = latency or LatencyLog(failures.database)
        self.retriever = retriever
        self.memory = memory
        self.tools = tools
        self.failures = failures
        self.persona = persona

    async def respond(self, request: ReplyRequest) -> Reply:
        query = _query(request)
        passages = await _search(self.retriever, query, PASSAGES_PER_ANSWER)
        context = ToolContext(
            audience=Audience.CUSTOMER, conversation=request.conversation, reply_pending=True
        )
        try:
            answer = await self._converse(request, query, passages, context)
        except LLMError as exc:
            # The customer still gets what the knowledge base knows; the failure is on record.
            await self.failures.record(exc, request.conversation, self.llm.model)
            return self.offline.reply_from(query, passages)
        if not answer or UNKNOWN_MARKER in answer:
            unknown = self.offline.unknown(query)
            if context.handoff and not unknown.handoff:
                return Reply(
                    text=HANDOFF_TEXT,
                    handoff=True,
                    handoff_servicer=context.handoff_servicer,
                    unattended_text=UNKNOWN_TEXT,
                    question=query,
                )
            return unknown
        return Reply(
            text=answer,
            handoff=context.handoff,
            handoff_servicer=context.handoff_servicer,
            sources=[cite(p) for p in passages if p.relevant],
            unattended_text=f"{answer}\n{NO_HUMAN_TEXT}" if context.handoff else "",
            question=query,
        )

    async def _converse(
        self, request: ReplyRequest, query: str, passages: Sequence[PassageLike], context: ToolContext
    ) -> str:
        schemas = self.tools.schemas(Audience.CUSTOMER)
        messages: list[ChatCompletionMessageParam] = [
            {
                "role": "system",
                "content": system_prompt(
                    persona=self.persona,
                    passages=passages,
                    remaining_messages=request.remaining_budget,
                    max_text_bytes=request.max_text_bytes,
                    can_transfer=any(s["function"]["name"] == "transfer_to_human" for s in schemas),
                ),
            }
        ]
        if self.memory is not None:
            turns = await self.memory.recall(
                request.conversation, exclude_msgids={m.msgid for m in request.messages}
            )
            messages.extend(_turn_message(t) for t in turns)
        messages.append({"role": "user", "content": query or "[空消息 empty message]"})
        for _round in range(MAX_TOOL_ROUNDS):
            completion = await self._complete(messages, schemas)
            if not completion.tool_calls:
                return completion.content.strip()
            messages.append(completion.as_message())
            for call in completion.tool_calls:
                outcome = await self.tools.call(call.name, call.arguments, context)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": outcome.content})
        completion = await self._complete(messages, schemas, allow_tools=False)
        return completion.content.strip()

    async def _complete(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        tools: Sequence[ChatCompletionToolParam],
        *,
        allow_tools: bool = True,
    ) -> Completion:
        """One model call, timed: the latency is recorded whether the call answers or fails."""
        started = time.monotonic()
        try:
            completion = await self.llm.complete(messages, tools=tools, allow_tools=allow_tools)
        except LLMError:
            await self.latency.record(time.monotonic() - started)
            raise
        await self.latency.record(time.monotonic() - started)
        return completion

    async def aclose(self) -> None:
        await self.llm.aclose()


def build_responder(
    settings: Settings,
    database: Database,
    *,
    retriever: Retriever | None = None,
    memory_source: MemorySource | None = None,
    tools: ToolRegistry | None = None,
    wecom: KfSessionApi | None = None,
) -> LLMResponder | OfflineResponder:
    """The LLM responder when a key is configured, else the offline one. Close it with `aclose()`.

    The knowledge base in `database` is the retriever unless another is given; `wecom` (a
    `WeComClient`) enables the kf tools; `tools` replaces the registry entirely.
    """
    if retriever is None:
        retriever = KnowledgeBase(database, make_embedder(settings))
    llm = LLMClient.from_settings(settings)
    if llm is None:
        return OfflineResponder(retriever, unknown_answer=settings.kf_unknown_answer)
    if tools is None:
        tools = ToolRegistry(ToolAudit(database))
        if wecom is not None:
            tools.extend(kf_tools(wecom))
    memory = ConversationMemory(
        memory_source or PipelineMemory(database), budget_tokens=settings.llm_memory_tokens
    )
    return LLMResponder(
        llm,
        retriever=retriever,
        memory=memory,
        tools=tools,
        failures=FailureLog(database),
        persona=settings.llm_persona,
        unknown_answer=settings.kf_unknown_answer,
    )
