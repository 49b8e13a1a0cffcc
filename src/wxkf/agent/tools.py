"""The tool registry: what the model may call, for whom, and the audit of every call.

A tool is a name, a description, a pydantic model of its arguments (its JSON schema is what the model
sees), an async handler, the audiences it serves (customers in a kf conversation, or staff), and
whether it needs an explicit confirmation before it acts. Registering one is a few lines::

    class LookupOrder(BaseModel):
        order_id: str = Field(description="订单号 / order number")

    async def lookup_order(context: ToolContext, args: LookupOrder) -> dict[str, Any]:
        return {"status": "shipped"}

    registry.add(Tool("lookup_order", "查询订单状态 / look up an order", LookupOrder, lookup_order))

Every call — executed, refused, invalid or failed — is written to `agent_tool_calls` with its
arguments and result. A handler raises `ToolError` for a failure the model should read and explain;
any other exception is recorded and reported to the model as an internal error.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from openai.types.chat import ChatCompletionToolParam
from pydantic import BaseModel, ValidationError

from wxkf.db.engine import Database
from wxkf.db.text import db_json
from wxkf.kf.responder import Conversation

log = logging.getLogger(__name__)

A = TypeVar("A", bound=BaseModel)


class Audience(StrEnum):
    CUSTOMER = "customer"  # the bot answering a customer in a kf conversation
    STAFF = "staff"  # a member of staff talking to the agent (console, WeCom app)


class ToolError(Exception):
    """A failure the model should be told about (the message is shown to it, Chinese first)."""


@dataclass
class ToolContext:
    """Who is calling and on which conversation; handlers also leave their effects here.

    `reply_pending` is True while the agent is composing a reply to the customer: actions that would
    stop that reply from being sent (moving the session out of states 0/1, wecom-api §4/§6) are left
    to the pipeline through `handoff` instead of being done at once.
    """

    audience: Audience
    conversation: Conversation | None = None
    actor: str | None = None  # a staff userid, when staff are talking
    reply_pending: bool = False
    confirm: Callable[[str, dict[str, Any]], Awaitable[bool]] | None = None
    handoff: bool = False
    handoff_servicer: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[ToolContext, A], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Tool(Generic[A]):
    name: str
    description: str
    arguments: type[A]
    handler: Handler[A]
    audiences: frozenset[Audience] = frozenset({Audience.CUSTOMER})
    needs_confirmation: bool = False

    def schema(self) -> ChatCompletionToolParam:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": _strip_titles(self.arguments.model_json_schema()),
            },
        }


def _strip_titles(schema: Any) -> Any:
    """Pydantic's titles repeat the names; the model reads every token of the schema."""
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


@dataclass(frozen=True)
class ToolOutcome:
    """What happened, and the JSON text fed back to the model as the tool message."""

    status: str  # ok | error | invalid | unknown | unconfirmed
    result: dict[str, Any]

    @property
    def content(self) -> str:
        return json.dumps(self.result, ensure_ascii=False, default=str)


_RECORD_CALL = """
INSERT INTO agent_tool_calls
    (tool, audience, open_kfid, external_userid, actor, arguments, result, status, error, duration_ms)
VALUES (%(tool)s, %(audience)s, %(open_kfid)s, %(external_userid)s, %(actor)s,
        CAST(%(arguments)s AS jsonb), CAST(%(result)s AS jsonb), %(status)s, %(error)s, %(duration_ms)s)
"""


class ToolAudit:
    """Writes each call to `agent_tool_calls`."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(
        self,
        *,
        tool: str,
        context: ToolContext,
        arguments: dict[str, Any],
        outcome: ToolOutcome,
        error: str | None,
        duration_ms: int,
    ) -> None:
        conversation = context.conversation
        async with self.database.pool.connection() as conn:
            await conn.execute(
                _RECORD_CALL,
                {
                    "tool": tool,
                    "audience": context.audience.value,
                    "open_kfid": conversation.open_kfid if conversation else None,
                    "external_userid": conversation.external_userid if conversation else None,
                    "actor": context.actor,
                    "arguments": db_json(arguments, ensure_ascii=False, default=str),
                    "result": outcome.content,
                    "status": outcome.status,
                    "error": error,
                    "duration_ms": duration_ms,
                },
            )


class ToolRegistry:
    """All tools the agent knows; `audit` records every call (None only in pure unit tests)."""

    def __init__(self, audit: ToolAudit | None = None) -> None:
        self.audit = audit
        self._tools: dict[str, Tool[Any]] = {}

    def add(self, tool: Tool[Any]) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def extend(self, tools: Iterable[Tool[Any]]) -> None:
        for tool in tools:
            self.add(tool)

    def get(self, name: str) -> Tool[Any] | None:
        return self._tools.get(name)

    def for_audience(self, audience: Audience) -> list[Tool[Any]]:
        return [t for t in self._tools.values() if audience in t.audiences]

    def schemas(self, audience: Audience) -> list[ChatCompletionToolParam]:
        return [t.schema() for t in self.for_audience(audience)]

    async def call(self, name: str, arguments: str, context: ToolContext) -> ToolOutcome:
        """Validate, confirm if needed, run and audit one call. Never raises for the model's mistakes."""
        started = time.perf_counter()
        parsed: dict[str, Any] = {}
        error: str | None = None
        try:
            loaded = json.loads(arguments or "{}")
            if not isinstance(loaded, dict):
                raise ValueError("arguments must be a JSON object")
            parsed = loaded
        except ValueError as exc:
            parsed = {"_raw": arguments}
            error = f"invalid JSON arguments: {exc}"
            outcome = ToolOutcome(
                "invalid", {"error": f"参数不是合法的 JSON 对象 / arguments are not a JSON object: {exc}"}
            )
        else:
            outcome, error = await self._run(name, parsed, context)
        await self._audit(name, context, parsed, outcome, error, started)
        return outcome

    async def _run(
        self, name: str, parsed: dict[str, Any], context: ToolContext
    ) -> tuple[ToolOutcome, str | None]:
        tool = self._tools.get(name)
        if tool is None or context.audience not in tool.audiences:
            return ToolOutcome(
                "unknown", {"error": f"没有名为 {name} 的工具 / no such tool: {name}"}
            ), "unknown tool"
        try:
            args = tool.arguments.model_validate(parsed)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return ToolOutcome("invalid", {"error": f"参数不正确 / invalid arguments: {problems}"}), problems
        if tool.needs_confirmation and (
            context.confirm is None or not await context.confirm(name, args.model_dump(mode="json"))
        ):
            return (
                ToolOutcome(
                    "unconfirmed",
                    {"error": "此操作需要确认，尚未确认，未执行 / this action needs confirmation; not done"},
                ),
                None,
            )
        try:
            result = await tool.handler(context, args)
        except ToolError as exc:
            return ToolOutcome("error", {"error": str(exc)}), str(exc)
        except Exception as exc:
            log.exception("tool %s failed", name)
            return (
                ToolOutcome("error", {"error": "工具执行出错 / the tool failed internally"}),
                f"{type(exc).__name__}: {exc}"[:500],
            )
        return ToolOutcome("ok", result), None

    async def _audit(
        self,
        name: str,
        context: ToolContext,
        parsed: dict[str, Any],
        outcome: ToolOutcome,
        error: str | None,
        started: float,
    ) -> None:
        if self.audit is None:
            return
        await self.audit.record(
            tool=name,
            context=context,
            arguments=parsed,
            outcome=outcome,
            error=error,
            duration_ms=int((time.perf_counter() - started) * 1000),
        )
