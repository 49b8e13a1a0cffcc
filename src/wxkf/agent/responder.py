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
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol

from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from wxkf.agent.content import ContentReader, ReadContent, Transcriber, image_part
from wxkf.agent.kb.embedders import EmbeddingError
from wxkf.agent.kb.store import KnowledgeBase, KnowledgeBaseError
from wxkf.agent.llm import Completion, LLMAuthError, LLMClient, LLMError
from wxkf.agent.memory import ConversationMemory, MemorySource, PipelineMemory, Speaker, Turn
from wxkf.agent.prompts import (
    ASK_HUMAN_RE,
    HANDOFF_TEXT,
    NO_HUMAN_TEXT,
    TRANSFER_TEXT,
    UNKNOWN_MARKER,
    UNKNOWN_TEXT,
    PassageLike,
    cite,
    offline_answer,
    small_talk,
    system_prompt,
)
from wxkf.agent.tools import Audience, Tool, ToolAudit, ToolContext, ToolRegistry
from wxkf.agent.tools_kf import KfSessionApi, kf_tools
from wxkf.agent.tools_upgrade import UpgradeApi, upgrade_tools
from wxkf.config import Settings
from wxkf.db.engine import Database
from wxkf.kf import ledger
from wxkf.kf.accounts import AccountSettings, EffectiveAccount, resolve
from wxkf.kf.responder import Conversation, OutboxMessage, Reply, ReplyRequest
from wxkf.ops.metrics import llm_latency_counters

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 4  # a model stuck calling tools gets one last turn without them
PASSAGES_PER_ANSWER = 4
UnknownAnswer = Literal["handoff", "say"]


class Retriever(Protocol):
    """The knowledge base as the responders use it (`wxkf.agent.kb.KnowledgeBase`)."""

    async def search(
        self, query: str, k: int, *, collections: Sequence[str] | None = None
    ) -> Sequence[PassageLike]: ...


class Accounts(Protocol):
    """Per-account settings (`wxkf.kf.accounts.AccountDirectory`)."""

    async def effective(self, open_kfid: str) -> EffectiveAccount: ...


class GlobalAccounts:
    """Every account with the global settings (no per-account store)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    async def effective(self, open_kfid: str) -> EffectiveAccount:
        if self.settings is None:
            return EffectiveAccount(open_kfid=open_kfid)
        return resolve(open_kfid, AccountSettings(), self.settings)


def route_menu(request: ReplyRequest, account: EffectiveAccount) -> tuple[ReplyRequest, Reply | None]:
    """A tapped menu option (text with `menu_id`, wecom-api §3) routed by its action: the request to
    answer (its question rewritten for `faq:`), or the reply itself (`human`, `reply:`)."""
    messages = list(request.messages)
    for index, message in enumerate(messages):
        option = account.menu_option(message.menu_id) if message.menu_id else None
        if option is None:
            continue
        kind, _, argument = option.action.partition(":")
        log.info("客户点击了菜单「%s」→ %s / menu option tapped", option.content, option.action)
        if kind == "human":
            return request, Reply(text=TRANSFER_TEXT, handoff=True)
        if kind == "reply":
            return request, Reply(text=argument)
        if kind == "faq":
            messages[index] = replace(message, content={"content": argument}, text=argument)
    return replace(request, messages=messages), None


def unknown_answer_of(account: EffectiveAccount, fallback: UnknownAnswer) -> UnknownAnswer:
    """What the bot does when the knowledge base is silent: the account's `kb_silent` when it has
    one of its own, else `KF_UNKNOWN_ANSWER` (`fallback`). `reply` is `say` by its per-account name."""
    if account.sources.get("kb_silent") != "account":
        return fallback
    return "say" if account.kb_silent in ("say", "reply") else "handoff"


def _silent(account: EffectiveAccount, fallback: UnknownAnswer, query: str) -> Reply:
    """The knowledge base is silent on `query`: say so, or ask for a human (`unknown_answer_of`)."""
    if unknown_answer_of(account, fallback) == "say":
        return Reply(text=account.kb_silent_text or UNKNOWN_TEXT, question=query)
    return Reply(
        text=account.kb_silent_text or HANDOFF_TEXT,
        handoff=True,
        unattended_text=UNKNOWN_TEXT,
        question=query,
    )


def _with_notes(reply: Reply, notes: Sequence[str]) -> Reply:
    """The honest lines about what could not be read come before the answer."""
    if not notes:
        return reply
    return replace(reply, text="\n".join([*notes, reply.text]) if reply.text else "\n".join(notes))


def _attachments(passages: Sequence[PassageLike]) -> list[OutboxMessage]:
    """The images and files the best passage's knowledge-base entry references (sent after the text)."""
    if not passages:
        return []
    return list(getattr(passages[0], "attachments", ()) or ())


async def _search(
    retriever: Retriever | None, query: str, k: int, collections: Sequence[str] | None = None
) -> Sequence[PassageLike]:
    """The retriever's passages; nothing when it cannot search now (the reason is logged)."""
    if retriever is None or not query:
        return []
    try:
        return await retriever.search(query, k, collections=collections)
    except (KnowledgeBaseError, EmbeddingError) as exc:
        # A knowledge base waiting for `wxkf kb reindex`, or an embedding endpoint down: the customer
        # hears the knowledge base is silent, the operator reads why (also in /ready and doctor).
        log.error("知识库无法检索 / the knowledge base cannot be searched: %s", exc)
        return []


_RECORD_FAILURE = """
INSERT INTO agent_llm_failures (kind, status_code, open_kfid, external_userid, model, detail)
VALUES (%(kind)s, %(status_code)s, %(open_kfid)s, %(external_userid)s, %(model)s, %(detail)s)
"""
# Several counters in one statement (names are distinct: ON CONFLICT meets each row once).
_ADD_TO_COUNTERS = """
INSERT INTO kf_counters (name, value) SELECT * FROM unnest(%s::text[], %s::bigint[])
ON CONFLICT (name) DO UPDATE SET value = kf_counters.value + EXCLUDED.value
"""


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
        async with self.database.pool.connection() as conn, conn.transaction():
            await conn.execute(
                _RECORD_FAILURE,
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
            await ledger.count(conn, f"agent.llm_failure.{error.kind}")


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
        try:
            async with self.database.pool.connection() as conn:
                await conn.execute(_ADD_TO_COUNTERS, (list(increments), list(increments.values())))
        except Exception as exc:  # a lost sample must not cost the customer their answer
            log.warning("LLM latency not recorded: %s", type(exc).__name__)


class OfflineResponder:
    """Answers from the knowledge base alone; what it cannot answer follows the account's
    `kb_silent`, else `KF_UNKNOWN_ANSWER`.

    What it cannot read (an image, a voice note without speech-to-text, a file) gets an honest line
    asking the customer to write instead; a shared location or link is acknowledged."""

    def __init__(
        self,
        retriever: Retriever | None,
        *,
        unknown_answer: UnknownAnswer = "handoff",
        reader: ContentReader | None = None,
        accounts: Accounts | None = None,
    ) -> None:
        self.retriever = retriever
        self.unknown_answer = unknown_answer
        self.reader = reader or ContentReader()
        self.accounts = accounts or GlobalAccounts()

    async def respond(self, request: ReplyRequest) -> Reply:
        account = await self.accounts.effective(request.conversation.open_kfid)
        request, routed = route_menu(request, account)
        if routed is not None:
            return routed
        content = await self.reader.read(request.messages)
        query = content.query
        if not query:
            if content.replies or content.acknowledgements:
                return Reply(text="\n".join([*content.replies, *content.acknowledgements][:3]))
            return self.unknown(query, account)
        if ASK_HUMAN_RE.search(query) or small_talk(query) is not None:
            return _with_notes(self.reply_from(query, [], account), content.replies)
        passages = await _search(self.retriever, query, 1, account.kb_collections)
        return _with_notes(self.reply_from(query, passages, account), content.replies)

    def reply_from(
        self, query: str, passages: Sequence[PassageLike], account: EffectiveAccount | None = None
    ) -> Reply:
        """The offline answer to `query` given the retrieved passages (the LLM's fallback too)."""
        if ASK_HUMAN_RE.search(query):
            return Reply(text=TRANSFER_TEXT, handoff=True, unattended_text=NO_HUMAN_TEXT, question=query)
        if (said := small_talk(query)) is not None:
            # A greeting or a thanks is not a question: answering it with "I'll pass this on" would
            # queue the customer for a human, where the bot no longer answers their next question.
            return Reply(text=said)
        relevant = [p for p in passages if getattr(p, "relevant", True)]
        if relevant:
            best = relevant[0]
            return Reply(text=offline_answer(best), sources=[cite(best)], messages=_attachments(relevant))
        return self.unknown(query, account)

    def unknown(self, query: str, account: EffectiveAccount | None = None) -> Reply:
        """The knowledge base is silent on `query`: the account's `kb_silent`, else `KF_UNKNOWN_ANSWER`."""
        return _silent(account or EffectiveAccount(open_kfid=""), self.unknown_answer, query)

    async def aclose(self) -> None:
        await self.reader.aclose()


def _turn_message(turn: Turn) -> ChatCompletionMessageParam:
    if turn.speaker is Speaker.CUSTOMER:
        return {"role": "user", "content": turn.text}
    if turn.speaker is Speaker.SERVICER:
        who = f"人工客服 {turn.servicer_userid}" if turn.servicer_userid else "人工客服"
        return {"role": "assistant", "content": f"（{who}）{turn.text}"}
    return {"role": "assistant", "content": turn.text}


# After a call that timed out, the LLM rests this long: customers meanwhile get the knowledge base's
# answer at once instead of waiting LLM_TIMEOUT_SECONDS × the attempts for the same fallback.
LLM_REST_SECONDS = 60.0


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
        reader: ContentReader | None = None,
        vision: LLMClient | None = None,
        accounts: Accounts | None = None,
        unknown_answer: UnknownAnswer = "handoff",
        rest_seconds: float = LLM_REST_SECONDS,
    ) -> None:
        self.unknown_answer = unknown_answer
        self.llm = llm
        self.rest_seconds = rest_seconds
        self._timed_out_at: dict[int, float] = {}  # id(an LLMClient) → when its last call timed out
        self.latency = latency or LatencyLog(failures.database)
        self.retriever = retriever
        self.memory = memory
        self.tools = tools
        self.failures = failures
        self.persona = persona
        self.vision = vision
        self.reader = reader or ContentReader(vision=vision is not None)
        self.accounts = accounts or GlobalAccounts()
        self.offline = OfflineResponder(
            retriever, unknown_answer=unknown_answer, reader=self.reader, accounts=self.accounts
        )

    async def respond(self, request: ReplyRequest) -> Reply:
        account = await self.accounts.effective(request.conversation.open_kfid)
        request, routed = route_menu(request, account)
        if routed is not None:
            return routed
        content = await self.reader.read(request.messages)
        if not content.answerable:
            # Only what cannot be read (an image without vision, a file): the honest words, no model call.
            return Reply(text="\n".join(content.replies) or HANDOFF_TEXT, handoff=not content.replies)
        query = content.query
        passages = await _search(self.retriever, query, PASSAGES_PER_ANSWER, account.kb_collections)
        if (
            query
            and not content.images
            and not any(getattr(p, "relevant", True) for p in passages)
            and account.sources.get("kb_silent") == "account"
            and unknown_answer_of(account, self.unknown_answer) == "say"
        ):
            # An account of its own set to say so when the knowledge base is silent: no model call.
            return _with_notes(self.offline.unknown(query, account), content.replies)
        context = ToolContext(
            audience=Audience.CUSTOMER, conversation=request.conversation, reply_pending=True
        )
        llm = self.vision if content.images and self.vision is not None else self.llm
        timed_out_at = self._timed_out_at.get(id(llm))
        if timed_out_at is not None and time.monotonic() - timed_out_at < self.rest_seconds:
            # It hung moments ago: another customer would wait the whole timeout for the same fallback.
            log.info(
                "大模型刚刚超时，%d 秒内直接用知识库回答 / the LLM timed out moments ago: the knowledge base "
                "answers for %d s",
                self.rest_seconds,
                self.rest_seconds,
                extra={"decision": "llm_resting"},
            )
            return _with_notes(self.offline.reply_from(query, passages, account), content.replies)
        try:
            answer = await self._converse(request, content, passages, context, account, llm)
        except LLMError as exc:
            # The customer still gets what the knowledge base knows; the failure is on record.
            if exc.kind == "timeout":
                self._timed_out_at[id(llm)] = time.monotonic()
            await self.failures.record(exc, request.conversation, llm.model)
            return _with_notes(self.offline.reply_from(query, passages, account), content.replies)
        self._timed_out_at.pop(id(llm), None)
        if not answer and not context.handoff:
            # An empty completion (a reasoning model's, a content filter's) is no answer, not "I don't
            # know": the customer gets what the knowledge base holds, as when the model fails.
            log.warning(
                "大模型返回了空回复，改用知识库回答 / the model answered nothing: the knowledge base answers",
                extra={"decision": "llm_empty_answer"},
            )
            return _with_notes(self.offline.reply_from(query, passages, account), content.replies)
        if not answer or UNKNOWN_MARKER in answer:
            unknown = self.offline.unknown(query, account)
            if context.handoff and not unknown.handoff:
                unknown = Reply(
                    text=HANDOFF_TEXT,
                    handoff=True,
                    handoff_servicer=context.handoff_servicer,
                    unattended_text=UNKNOWN_TEXT,
                    question=query,
                )
            return _with_notes(unknown, content.replies)
        reply = Reply(
            text=answer,
            handoff=context.handoff,
            handoff_servicer=context.handoff_servicer,
            sources=[cite(p) for p in passages if getattr(p, "relevant", True)],
            messages=_attachments([p for p in passages if getattr(p, "relevant", True)]),
            unattended_text=f"{answer}\n{NO_HUMAN_TEXT}" if context.handoff else "",
            question=query,
        )
        return _with_notes(reply, content.replies)

    async def _converse(
        self,
        request: ReplyRequest,
        content: ReadContent,
        passages: Sequence[PassageLike],
        context: ToolContext,
        account: EffectiveAccount,
        llm: LLMClient,
    ) -> str:
        schemas = self.tools.schemas(Audience.CUSTOMER)
        messages: list[ChatCompletionMessageParam] = [
            {
                "role": "system",
                "content": system_prompt(
                    persona=account.persona or self.persona,
                    passages=passages,
                    remaining_messages=request.remaining_budget,
                    max_text_bytes=request.max_text_bytes,
                    can_transfer=any(s["function"]["name"] == "transfer_to_human" for s in schemas),
                    instructions=account.prompt,
                ),
            }
        ]
        if self.memory is not None:
            turns = await self.memory.recall(
                request.conversation, exclude_msgids={m.msgid for m in request.messages}
            )
            messages.extend(_turn_message(t) for t in turns)
        text = content.prompt or "[空消息 empty message]"
        if content.images:
            # OpenAI-compatible multimodal content: the words, then each image as a data URL.
            parts: list[Any] = [{"type": "text", "text": text}, *(image_part(m) for m in content.images)]
            messages.append({"role": "user", "content": parts})
        else:
            messages.append({"role": "user", "content": text})
        for _round in range(MAX_TOOL_ROUNDS):
            completion = await self._complete(messages, schemas, llm=llm)
            if not completion.tool_calls:
                return completion.content.strip()
            messages.append(completion.as_message())
            for call in completion.tool_calls:
                outcome = await self.tools.call(call.name, call.arguments, context)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": outcome.content})
        completion = await self._complete(messages, schemas, allow_tools=False, llm=llm)
        return completion.content.strip()

    async def _complete(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        tools: Sequence[ChatCompletionToolParam],
        *,
        allow_tools: bool = True,
        llm: LLMClient | None = None,
    ) -> Completion:
        """One model call, timed: the latency is recorded whether the call answers or fails."""
        started = time.monotonic()
        try:
            completion = await (llm or self.llm).complete(messages, tools=tools, allow_tools=allow_tools)
        except LLMError:
            await self.latency.record(time.monotonic() - started)
            raise
        await self.latency.record(time.monotonic() - started)
        return completion

    async def aclose(self) -> None:
        await self.llm.aclose()
        if self.vision is not None:
            await self.vision.aclose()
        await self.reader.aclose()


def build_responder(
    settings: Settings,
    database: Database,
    *,
    retriever: Retriever | None = None,
    memory_source: MemorySource | None = None,
    tools: ToolRegistry | None = None,
    wecom: KfSessionApi | None = None,
    upgrade: UpgradeApi | None = None,
    more_tools: Iterable[Tool[Any]] = (),
    accounts: Accounts | None = None,
) -> LLMResponder | OfflineResponder:
    """The LLM responder when a key is configured, else the offline one. Close it with `aclose()`.

    The knowledge base in `database` is the retriever unless another is given; `wecom` (a
    `WeComClient`) enables the kf tools, `upgrade` (the same client) the 升级服务 tools, `more_tools`
    join them (push's intent tools); `tools` replaces the registry entirely. `accounts` gives
    each kf account its own settings (else the global ones). Speech-to-text (STT_BASE_URL) serves
    both responders; vision (LLM_VISION_MODEL) the LLM one.
    """
    if retriever is None:
        retriever = KnowledgeBase.from_settings(database, settings)
    accounts = accounts or GlobalAccounts(settings)
    llm = LLMClient.from_settings(settings)
    vision = LLMClient.vision_from_settings(settings) if llm is not None else None
    reader = ContentReader(Transcriber.from_settings(settings), vision=vision is not None)
    if llm is None:
        return OfflineResponder(
            retriever, unknown_answer=settings.kf_unknown_answer, reader=reader, accounts=accounts
        )
    if tools is None:
        tools = ToolRegistry(ToolAudit(database))
        if wecom is not None:
            tools.extend(kf_tools(wecom))
        if upgrade is not None:
            tools.extend(upgrade_tools(upgrade))
        tools.extend(more_tools)
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
        reader=reader,
        vision=vision,
        accounts=accounts,
        unknown_answer=settings.kf_unknown_answer,
    )
