"""`wxkf accounts list|show|set`: several kf accounts, each with its own settings (`wxkf.kf.accounts`),
and `wxkf upgrade config|member|groupchat|cancel`: 升级服务 by hand (wecom-api §8)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from wxkf.kf.cli import _run, _settings

if TYPE_CHECKING:
    from wxkf.kf.runtime import Pipeline

accounts_app = typer.Typer(
    help="客服账号及各自的设置 / kf accounts and their own settings", no_args_is_help=True
)
upgrade_app = typer.Typer(
    help="升级服务：推荐专员或客户群 / recommend a staff member or a group", no_args_is_help=True
)
console = Console(highlight=False)

OpenKfid = Annotated[str, typer.Argument(help="客服账号 open_kfid (wk…)")]
ExternalUserid = Annotated[str, typer.Argument(help="客户 external_userid (wm…)")]


def _fail(message: str) -> typer.Exit:
    console.print(f"❌ {message}", markup=False)
    return typer.Exit(1)


_NO_SUCH_ACCOUNT = (
    "企业微信中没有这个客服账号：{open_kfid}（用 wxkf accounts list 查看）/ WeCom has no kf account "
    "{open_kfid}: see wxkf accounts list"
)


async def _wecom_has(pipeline: Pipeline, open_kfid: str) -> bool | None:
    """Whether kf/account/list names `open_kfid`; None when WeCom cannot be asked (not configured,
    unreachable): the caller goes on, it cannot tell a typo from an account."""
    from wxkf.kf.runtime import PipelineNotConfigured
    from wxkf.wecom.errors import WeComError

    try:
        listed = await pipeline.client.list_accounts()
    except (PipelineNotConfigured, WeComError):
        return None
    return any(a.open_kfid == open_kfid for a in listed.account_list)


@accounts_app.command("list")
def accounts_list() -> None:
    """列出客服账号（企业微信中的与有设置的）/ list the kf accounts (WeCom's and those with settings)."""
    from wxkf.kf.runtime import PipelineNotConfigured
    from wxkf.wecom.errors import WeComError

    async def body(pipeline: Pipeline) -> None:
        names: dict[str, str] = {}
        try:
            names = {a.open_kfid: a.name for a in (await pipeline.client.list_accounts()).account_list}
        except (PipelineNotConfigured, WeComError) as exc:
            console.print(f"⚠️ 无法从企业微信读取账号列表 / cannot list WeCom's accounts: {exc}", markup=False)
        own = dict(await pipeline.accounts.all())
        table = Table("open_kfid", "名称 name", "自己的设置 own settings")
        for open_kfid in sorted(set(names) | set(own)):
            keys = sorted(own[open_kfid].model_dump(exclude_none=True)) if open_kfid in own else []
            mine = own.get(open_kfid)
            name = names.get(open_kfid) or (mine.name if mine is not None else "") or ""
            table.add_row(open_kfid, name, ", ".join(keys) or "—（全部沿用全局 / all global）")
        console.print(table)

    _run(_settings(), body)


@accounts_app.command("show")
def accounts_show(open_kfid: OpenKfid) -> None:
    """显示账号生效的设置及来源 / the account's effective settings and where each comes from."""

    async def body(pipeline: Pipeline) -> None:
        if await _wecom_has(pipeline, open_kfid) is False:
            console.print(f"⚠️ {_NO_SUCH_ACCOUNT.format(open_kfid=open_kfid)}", markup=False)
        account = await pipeline.accounts.effective(open_kfid)
        table = Table("设置 setting", "值 value", "来源 source")
        for key, source in account.sources.items():
            value = getattr(account, key)
            shown = value.model_dump_json() if hasattr(value, "model_dump_json") else repr(value)
            table.add_row(key, shown, "账号 account" if source == "account" else "全局 global")
        console.print(f"客服账号 / account {open_kfid} {account.name}")
        console.print(table)

    _run(_settings(), body)


@accounts_app.command("set")
def accounts_set(
    open_kfid: OpenKfid,
    pairs: Annotated[
        list[str],
        typer.Argument(
            help="key=value，如 persona=你是茶叶店客服 kb_collections=tea welcome_menu='{\"options\": […]}'；"
            "key= 恢复全局设置 / key= goes back to the global setting"
        ),
    ],
) -> None:
    """修改账号自己的设置 / change the account's own settings."""
    from wxkf.kf.accounts import AccountSettingsError, parse_changes

    changes: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise _fail(f"参数须为 key=value：{pair!r} / arguments are key=value")
        changes[key.strip()] = value
    try:
        parsed = parse_changes(changes)
    except AccountSettingsError as exc:
        raise _fail(str(exc)) from None

    async def body(pipeline: Pipeline) -> None:
        known = open_kfid in dict(await pipeline.accounts.all())  # its settings can always be changed
        if not known and await _wecom_has(pipeline, open_kfid) is False:
            raise _fail(_NO_SUCH_ACCOUNT.format(open_kfid=open_kfid))
        try:
            stored = await pipeline.accounts.update(open_kfid, parsed)
        except AccountSettingsError as exc:
            raise _fail(str(exc)) from None
        console.print(f"✅ 已保存 / saved: {stored.model_dump_json(exclude_none=True)}", markup=False)

    _run(_settings(), body)


@upgrade_app.command("config")
def upgrade_config() -> None:
    """升级服务中配置的专员与客户群 / the members and groups configured in 升级服务."""

    async def body(pipeline: Pipeline) -> None:
        config = await pipeline.client.get_upgrade_service_config()
        console.print(f"专员 / members: {', '.join(config.member_range.userid_list) or '—'}")
        console.print(f"客户群 / groups: {', '.join(config.groupchat_range.chat_id_list) or '—'}")

    _wecom(body)


def _wecom(body: Callable[[Pipeline], Awaitable[None]]) -> None:
    from wxkf.agent.tools import ToolError
    from wxkf.kf.runtime import PipelineNotConfigured
    from wxkf.wecom.errors import WeComError

    try:
        _run(_settings(), body)
    except (WeComError, PipelineNotConfigured, ToolError) as exc:
        raise _fail(str(exc)) from None


def _recommend(
    target: str, open_kfid: str, external_userid: str, target_id: str | None, wording: str | None
) -> None:
    from wxkf.agent.tools_upgrade import upgrade
    from wxkf.kf.responder import Conversation

    async def body(pipeline: Pipeline) -> None:
        result = await upgrade(
            pipeline.client, Conversation(open_kfid, external_userid), target, target_id, wording
        )
        console.print(f"✅ 已为客户推荐 / recommended {result['target']} {result['id']}")

    _wecom(body)


Wording = Annotated[str | None, typer.Option(help="推荐语 / the words shown to the customer")]


@upgrade_app.command("member")
def upgrade_member(
    open_kfid: OpenKfid,
    external_userid: ExternalUserid,
    userid: Annotated[
        str | None, typer.Option(help="专员 userid；不填用配置的第一个 / default: the first")
    ] = None,
    wording: Wording = None,
) -> None:
    """推荐专员（客户可在微信中直接联系）/ recommend a staff member (type 1)."""
    _recommend("member", open_kfid, external_userid, userid, wording)


@upgrade_app.command("groupchat")
def upgrade_groupchat(
    open_kfid: OpenKfid,
    external_userid: ExternalUserid,
    chat_id: Annotated[
        str | None, typer.Option(help="客户群 chat_id；不填用配置的第一个 / default: the first")
    ] = None,
    wording: Wording = None,
) -> None:
    """推荐客户群 / recommend a customer group (type 2)."""
    _recommend("groupchat", open_kfid, external_userid, chat_id, wording)


@upgrade_app.command("cancel")
def upgrade_cancel(open_kfid: OpenKfid, external_userid: ExternalUserid) -> None:
    """取消推荐 / cancel the recommendation."""

    async def body(pipeline: Pipeline) -> None:
        await pipeline.client.cancel_upgrade_service(open_kfid, external_userid)
        console.print("✅ 已取消 / cancelled")

    _wecom(body)
