"""升级服务 (upgrade service): recommend a staff member's own WeCom or a customer group to the customer.

wecom-api §8 (doc 94674): `kf/customer/upgrade_service` with type 1 (专员, a member) or 2 (客户群, a
customer group) and an optional wording; the userid / chat_id must be configured in 微信客服 →
升级服务, which `get_upgrade_service_config` returns (else WeCom answers 95021). The tool checks the
configuration first, so the model is told which choices exist instead of meeting an errcode.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from wxkf.agent.tools import Audience, Tool, ToolContext, ToolError
from wxkf.agent.tools_kf import NoArguments
from wxkf.kf.responder import Conversation
from wxkf.wecom.errors import WeComError
from wxkf.wecom.models import (
    UpgradeGroupChat,
    UpgradeMember,
    UpgradeServiceConfigResponse,
    UpgradeServiceRequest,
)


class UpgradeApi(Protocol):
    """The part of `WeComClient` the upgrade tools use."""

    async def get_upgrade_service_config(self) -> UpgradeServiceConfigResponse: ...

    async def upgrade_service(self, request: UpgradeServiceRequest) -> None: ...

    async def cancel_upgrade_service(self, open_kfid: str, external_userid: str) -> None: ...


class UpgradeArguments(BaseModel):
    target: Literal["member", "groupchat"] = Field(
        description="member：推荐专属客服（专员）；groupchat：推荐客户群 / a staff member or a customer group"
    )
    id: str | None = Field(
        default=None,
        description="专员 userid 或客户群 chat_id；不填则用配置的第一个 / default: the first configured",
    )
    wording: str | None = Field(
        default=None, description="推荐语，如「您好，我是您的专属顾问」/ the words shown"
    )


def _conversation(context: ToolContext) -> Conversation:
    if context.conversation is None:
        raise ToolError("当前没有会话 / there is no conversation to act on")
    return context.conversation


async def upgrade(
    client: UpgradeApi, conversation: Conversation, target: str, target_id: str | None, wording: str | None
) -> dict[str, Any]:
    """Check the choice against 升级服务's configuration and recommend it (the tool and the CLI)."""
    config = await client.get_upgrade_service_config()
    choices = config.member_range.userid_list if target == "member" else config.groupchat_range.chat_id_list
    if not choices:
        raise ToolError(
            f"升级服务里没有配置{'专员' if target == 'member' else '客户群'}：请在企业微信后台「微信客服 → 升级服务」"
            f"中添加 / nothing is configured for {target} in 升级服务"
        )
    chosen = target_id or choices[0]
    if chosen not in choices:
        raise ToolError(
            f"{chosen} 不在升级服务的配置中，可选：{', '.join(choices)} / not configured (WeCom would answer 95021)"
        )
    request = UpgradeServiceRequest(
        open_kfid=conversation.open_kfid,
        external_userid=conversation.external_userid,
        type=1 if target == "member" else 2,
        member=UpgradeMember(userid=chosen, wording=wording) if target == "member" else None,
        groupchat=UpgradeGroupChat(chat_id=chosen, wording=wording) if target == "groupchat" else None,
    )
    await client.upgrade_service(request)
    return {"upgraded": True, "target": target, "id": chosen, "wording": wording}


def upgrade_tools(client: UpgradeApi) -> list[Tool[Any]]:
    async def upgrade_service(context: ToolContext, args: UpgradeArguments) -> dict[str, Any]:
        try:
            return await upgrade(client, _conversation(context), args.target, args.id, args.wording)
        except WeComError as exc:
            raise ToolError(f"升级服务失败 / the upgrade failed: {exc}") from exc

    async def cancel_upgrade_service(context: ToolContext, args: NoArguments) -> dict[str, Any]:
        conversation = _conversation(context)
        try:
            await client.cancel_upgrade_service(conversation.open_kfid, conversation.external_userid)
        except WeComError as exc:
            raise ToolError(f"取消升级服务失败 / cancelling failed: {exc}") from exc
        return {"cancelled": True}

    return [
        Tool(
            "upgrade_service",
            "为客户推荐专属客服（专员，可在客户自己的微信中联系）或客户群（升级服务）。客户需要长期跟进、"
            "大客户、或要求加企业微信时使用 / recommend a staff member's own WeCom or a customer group",
            UpgradeArguments,
            upgrade_service,
            frozenset({Audience.CUSTOMER, Audience.STAFF}),
        ),
        Tool(
            "cancel_upgrade_service",
            "取消为当前客户推荐的专员或客户群 / cancel the recommendation",
            NoArguments,
            cancel_upgrade_service,
            frozenset({Audience.STAFF}),
        ),
    ]
