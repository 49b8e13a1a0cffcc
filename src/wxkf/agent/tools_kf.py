"""The kf tools: transfer to a human, end the session, read the customer's profile.

They act on the conversation in the `ToolContext`. While a reply to the customer is being composed,
`transfer_to_human` does not move the session itself: WeCom refuses send_msg once the session is in
state 2 or 3 (wecom-api §4/§6), so the reply would be lost. It asks the pipeline instead
(`Reply.handoff`), which sends the reply first and then calls service_state/trans. Outside a reply
(staff acting on a conversation) the tools call WeCom at once.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field

from wxkf.agent.tools import Audience, Tool, ToolContext, ToolError
from wxkf.kf.responder import Conversation
from wxkf.wecom.errors import WeComError
from wxkf.wecom.models import CustomerBatchGetResponse

# wecom-api §6: service states
STATE_QUEUE = 2  # 待接入池排队中
STATE_HUMAN = 3  # 由人工接待
STATE_ENDED = 4  # 已结束

_GENDER = {0: "未知 unknown", 1: "男 male", 2: "女 female"}


class KfSessionApi(Protocol):
    """The part of `wxkf.wecom.client.WeComClient` the kf tools use (wecom-api §6, §8)."""

    async def get_service_state(self, open_kfid: str, external_userid: str) -> tuple[int, str | None]: ...

    async def trans_service_state(
        self, open_kfid: str, external_userid: str, service_state: int, servicer_userid: str | None = None
    ) -> str | None: ...

    async def batchget_customers(
        self, external_userids: list[str], need_enter_session_context: bool = False
    ) -> CustomerBatchGetResponse: ...


class TransferToHuman(BaseModel):
    reason: str = Field(description="转人工的原因，一句话 / why, in one sentence")
    servicer_userid: str | None = Field(
        default=None,
        description="指定接待人员的 userid；不填则进入待接入池排队 / a named servicer, else the queue",
    )


class NoArguments(BaseModel):
    pass


def _conversation(context: ToolContext) -> Conversation:
    if context.conversation is None:
        raise ToolError("当前没有会话 / there is no conversation to act on")
    return context.conversation


def kf_tools(client: KfSessionApi) -> list[Tool[Any]]:
    """The kf tools bound to `client` (a `WeComClient` in production, the simulator's in tests)."""

    async def transfer_to_human(context: ToolContext, args: TransferToHuman) -> dict[str, Any]:
        conversation = _conversation(context)
        state = STATE_HUMAN if args.servicer_userid else STATE_QUEUE
        if context.reply_pending:
            context.handoff = True
            context.handoff_servicer = args.servicer_userid
            return {"scheduled": True, "service_state": state, "servicer_userid": args.servicer_userid}
        try:
            msg_code = await client.trans_service_state(
                conversation.open_kfid, conversation.external_userid, state, args.servicer_userid
            )
        except WeComError as exc:
            raise ToolError(f"转接失败 / transfer failed: {exc}") from exc
        return {
            "service_state": state,
            "servicer_userid": args.servicer_userid,
            "msg_code": msg_code,
        }

    async def end_session(context: ToolContext, args: NoArguments) -> dict[str, Any]:
        conversation = _conversation(context)
        try:
            state, servicer = await client.get_service_state(
                conversation.open_kfid, conversation.external_userid
            )
            # wecom-api §6: no API transition leaves 4, so ending an ended session is refused (95016).
            if state == STATE_ENDED:
                return {"service_state": STATE_ENDED, "already_ended": True}
            msg_code = await client.trans_service_state(
                conversation.open_kfid, conversation.external_userid, STATE_ENDED, servicer
            )
        except WeComError as exc:
            raise ToolError(f"结束会话失败 / ending the session failed: {exc}") from exc
        return {"service_state": STATE_ENDED, "servicer_userid": servicer, "msg_code": msg_code}

    async def customer_profile(context: ToolContext, args: NoArguments) -> dict[str, Any]:
        conversation = _conversation(context)
        try:
            response = await client.batchget_customers([conversation.external_userid], True)
        except WeComError as exc:
            raise ToolError(f"读取客户资料失败 / reading the profile failed: {exc}") from exc
        if not response.customer_list:
            raise ToolError("企业微信没有返回该客户的资料 / WeCom returned no profile for this customer")
        customer = response.customer_list[0]
        context_info = customer.enter_session_context or {}
        # Only what helps the answer: no avatar, no unionid.
        return {
            "nickname": customer.nickname,
            "gender": _GENDER.get(customer.gender, _GENDER[0]),
            "scene": context_info.get("scene", ""),
            "scene_param": context_info.get("scene_param", ""),
        }

    return [
        Tool(
            "transfer_to_human",
            "把客户转给人工客服：不填 servicer_userid 进入排队，填写则转给指定接待人员。"
            "在客户要求人工、投诉、或知识库没有答案时使用 / hand the customer to a human (queue or a named servicer)",
            TransferToHuman,
            transfer_to_human,
            frozenset({Audience.CUSTOMER, Audience.STAFF}),
        ),
        Tool(
            "end_session",
            "结束当前会话（由当前接待人员结束）/ end the current session (with the current servicer)",
            NoArguments,
            end_session,
            frozenset({Audience.STAFF}),
        ),
        Tool(
            "customer_profile",
            "查询当前客户的昵称、性别和进入会话的场景 / the customer's nickname, gender and entry scene",
            NoArguments,
            customer_profile,
            frozenset({Audience.CUSTOMER, Audience.STAFF}),
        ),
    ]
