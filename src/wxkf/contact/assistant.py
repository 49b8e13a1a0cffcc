"""A staff-facing conversation with the agent about customer contact.

A member writes ("给客户 A 发一条活动通知"); the model answers and may call the contact tools. The
conversation is staff-facing (`Audience.STAFF`, `actor` = the member), so customers never see these
tools, and the sending tools are only offered to members on `CONTACT_STAFF_USERIDS`. Each `ask` is
one turn with its own `ToolContext`: a confirmation token issued in a turn cannot be redeemed in the
same turn, so a task is only created after the member has answered the preview.
"""

from __future__ import annotations

from openai.types.chat import ChatCompletionMessageParam

from wxkf.agent.llm import LLMClient
from wxkf.agent.tools import Audience, ToolAudit, ToolContext, ToolRegistry
from wxkf.contact.tools import ContactTools

MAX_TOOL_ROUNDS = 4

SYSTEM_PROMPT = (
    "你是企业微信成员 {member} 的助手，帮助成员查看自己的客户并给客户发消息。"
    "给客户发消息会创建群发任务，成员需在企业微信中确认后才会发送；每位客户接收条数有上限。"
    "发送类工具第一次调用只返回预览：把预览原样给成员看，询问是否发送；只有成员明确同意后，"
    "才可在下一轮带 confirmation_token 再次调用。不要编造客户 ID。\n"
    "You assist WeCom member {member} with their customers. Sending creates a task the member confirms "
    "in WeCom; each customer can receive a limited number. A sending tool's first call only returns a "
    "preview: show it and ask; call again with confirmation_token only after the member said yes."
)


class StaffAssistant:
    """One member's conversation: `ask` appends the member's message and the answer to `history`."""

    def __init__(self, llm: LLMClient, tools: ContactTools, audit: ToolAudit | None) -> None:
        self.llm = llm
        self.tools = tools
        self.audit = audit

    async def ask(self, member: str, history: list[ChatCompletionMessageParam], message: str) -> str:
        registry = ToolRegistry(self.audit)
        registry.extend(self.tools.tools_for_member(member))
        schemas = registry.schemas(Audience.STAFF)
        context = ToolContext(audience=Audience.STAFF, actor=member)
        if not history:
            history.append({"role": "system", "content": SYSTEM_PROMPT.format(member=member)})
        history.append({"role": "user", "content": message})
        for _round in range(MAX_TOOL_ROUNDS):
            completion = await self.llm.complete(history, tools=schemas)
            if not completion.tool_calls:
                history.append({"role": "assistant", "content": completion.content})
                return completion.content
            history.append(completion.as_message())
            for call in completion.tool_calls:
                outcome = await registry.call(call.name, call.arguments, context)
                history.append({"role": "tool", "tool_call_id": call.id, "content": outcome.content})
        completion = await self.llm.complete(history, tools=schemas, allow_tools=False)
        history.append({"role": "assistant", "content": completion.content})
        return completion.content
