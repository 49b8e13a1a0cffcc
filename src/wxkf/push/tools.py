"""The agent's intent tools for customers: create_intent (confirmed first), list_my_intents, cancel_intent.

"帮我找北京做 AI 的合作伙伴" becomes an intent through two calls. The first stores a *draft* and
returns its preview and `draft_id`; the model shows the preview and asks. Only a later turn — the
customer said yes — may call again with `draft_id`, and then the stored draft (not a new set of
arguments) becomes active and is matched. A draft issued in the same turn is refused, so the model
cannot confirm on the customer's behalf. Every call is audited by the tool registry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError

from wxkf.agent.tools import Audience, Tool, ToolContext, ToolError
from wxkf.push.conditions import Condition, Conditions
from wxkf.push.errors import PushError, problems_of
from wxkf.push.models import Intent, IntentIn, Owner
from wxkf.push.service import PushService

DRAFT_TTL = timedelta(minutes=30)
_ISSUED = "push_drafts_issued"  # ToolContext.notes key: drafts created in this turn


class CreateIntent(BaseModel):
    name: Annotated[str, Field(max_length=50, description="意图名称，如「寻找AI合作伙伴」/ a short name")] = (
        ""
    )
    description: Annotated[
        str, Field(max_length=1000, description="客户的原话或概括 / what the customer wants")
    ] = ""
    required: list[Condition] = Field(
        default_factory=list,
        description="必须满足的条件 {field, op, value}；field 如 city/industry/age/tags，op 为 eq/contains/in/gt/lt/between",
    )
    preferred: list[Condition] = Field(
        default_factory=list, description="最好满足的条件（加分）/ nice to have"
    )
    keywords: list[str] = Field(
        default_factory=list, description="关键词 / keywords the profile should mention"
    )
    excluded: list[str] = Field(default_factory=list, description="不要的词 / words that rule a profile out")
    draft_id: int | None = Field(
        default=None,
        description="客户确认预览后，带上第一次调用返回的 draft_id 再调用一次 / after the customer confirmed the "
        "preview, call again with the draft_id the first call returned",
    )


class CancelIntent(BaseModel):
    intent_id: int = Field(description="要取消的意图编号 / the intent to cancel")


class NoArguments(BaseModel):
    pass


def _owner(context: ToolContext) -> Owner:
    if context.audience != Audience.CUSTOMER or context.conversation is None:
        raise ToolError("仅在客户会话中可用 / only in a customer conversation")
    return Owner(
        open_kfid=context.conversation.open_kfid, external_userid=context.conversation.external_userid
    )


def preview(intent: Intent, settings_quiet: str) -> str:
    conditions = intent.conditions
    lines = [f"意图：{intent.name}"]
    if intent.description:
        lines.append(f"说明：{intent.description}")
    if conditions.required:
        lines.append("必须：" + "；".join(c.describe() for c in conditions.required))
    if conditions.preferred:
        lines.append("最好：" + "；".join(c.describe() for c in conditions.preferred))
    if conditions.keywords:
        lines.append("关键词：" + "、".join(conditions.keywords))
    if conditions.excluded:
        lines.append("排除：" + "；".join(c.describe() for c in conditions.excluded))
    quiet = f"，静默时段 {settings_quiet} 不打扰" if settings_quiet else ""
    lines.append(f"找到匹配度 {round(intent.threshold * 100)}% 以上的资料时，在本会话通知您{quiet}。")
    return "\n".join(lines)


def _summary(intent: Intent) -> dict[str, Any]:
    return {
        "intent_id": intent.id,
        "name": intent.name,
        "status": intent.status,
        "description": intent.description,
        "created_at": intent.created_at.isoformat(),
    }


def customer_tools(push: PushService) -> list[Tool[Any]]:
    """The three tools, bound to `push`."""

    async def create_intent(context: ToolContext, args: CreateIntent) -> dict[str, Any]:
        owner = _owner(context)
        if args.draft_id is not None:
            return await _confirm(context, owner, args.draft_id)
        try:
            conditions = Conditions(
                required=args.required,
                preferred=args.preferred,
                keywords=args.keywords,
                excluded=args.excluded,
            )
            intent = IntentIn(
                open_kfid=owner.open_kfid,
                external_userid=owner.external_userid,
                name=args.name or args.description[:50],
                description=args.description,
                conditions=conditions,
            )
        except ValidationError as exc:
            raise ToolError("意图不完整 / the intent is incomplete: " + "; ".join(problems_of(exc))) from None
        try:
            draft = await push.create_intent(intent, created_by="llm", status="draft", match=False)
        except PushError as exc:
            raise ToolError(str(exc)) from None
        context.notes.setdefault(_ISSUED, set()).add(draft.id)
        prefs = await push.preferences(owner)
        return {
            "status": "needs_confirmation",
            "draft_id": draft.id,
            "preview": preview(draft, prefs.quiet_hours),
            "instruction": "把预览原样给客户看并询问是否创建；客户明确同意后，下一轮带 draft_id 再调用。未获同意不要调用 / "
            "show the customer this preview and ask; only after they agree, call again with draft_id next turn",
        }

    async def _confirm(context: ToolContext, owner: Owner, draft_id: int) -> dict[str, Any]:
        if draft_id in context.notes.get(_ISSUED, set()):
            raise ToolError(
                "客户还没有看到预览并确认：先把预览给客户看，等客户回复同意 / the customer has not seen the "
                "preview yet: show it and wait for their answer"
            )
        try:
            draft = await push.get_intent(draft_id)
        except PushError:
            draft = None
        if (
            draft is None
            or (draft.open_kfid, draft.external_userid) != (owner.open_kfid, owner.external_userid)
            or draft.status != "draft"
            or draft.created_at < push.clock() - DRAFT_TTL
        ):
            raise ToolError(
                "这个草稿不存在、已确认或已过期：请重新生成预览 / the draft is unknown, used or expired"
            )
        intent = await push.set_intent_status(draft_id, "active", owner=owner)
        return {"status": "created", **_summary(intent)}

    async def list_my_intents(context: ToolContext, args: NoArguments) -> dict[str, Any]:
        owner = _owner(context)
        intents = [i for i in await push.list_intents(owner) if i.status in ("active", "paused")]
        return {"intents": [_summary(i) for i in intents]}

    async def cancel_intent(context: ToolContext, args: CancelIntent) -> dict[str, Any]:
        owner = _owner(context)
        try:
            intent = await push.set_intent_status(args.intent_id, "cancelled", owner=owner)
        except PushError as exc:
            raise ToolError(str(exc).split("\n")[0]) from None
        return {"status": "cancelled", **_summary(intent)}

    customer = frozenset({Audience.CUSTOMER})
    return [
        Tool(
            "create_intent",
            "客户想找某类人或资源（如「帮我找北京做AI的合作伙伴」）时，记录为意图，有匹配的资料时通知客户。"
            "第一次调用只返回预览和 draft_id，须把预览给客户看、客户同意后再带 draft_id 调用 / record what the "
            "customer is looking for; the first call returns a preview, confirm with draft_id after the customer agrees",
            CreateIntent,
            create_intent,
            audiences=customer,
        ),
        Tool(
            "list_my_intents",
            "列出客户当前的意图（找人需求）/ list the customer's intents",
            NoArguments,
            list_my_intents,
            audiences=customer,
        ),
        Tool(
            "cancel_intent",
            "取消客户的一个意图，不再推送它的匹配 / cancel one of the customer's intents",
            CancelIntent,
            cancel_intent,
            audiences=customer,
        ),
    ]
