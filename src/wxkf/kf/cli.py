"""`wxkf session get|end|transfer`: a customer's kf session by hand.

`wxkf session end` force-ends a session: read the state, end the session with the
current servicer (state 3 → 4), read the state again — printing each step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from wxkf.kf.policy import state_name
from wxkf.kf.responder import Conversation
from wxkf.wecom.errors import APIError, WeComError

# The pipeline (procrastinate, psycopg, httpx) loads when a session command runs: `wxkf --help`
# and the other commands start without it.
if TYPE_CHECKING:
    from wxkf.config import Settings
    from wxkf.kf.runtime import Pipeline

session_app = typer.Typer(help="会话状态 / a customer's kf session (wecom-api §6)", no_args_is_help=True)
console = Console(highlight=False)
RULE = "─" * 70

OpenKfid = Annotated[str, typer.Argument(help="客服账号 open_kfid (wk…)")]
ExternalUserid = Annotated[str, typer.Argument(help="客户 external_userid (wm…)")]


def _settings() -> Settings:
    from wxkf.cli import settings_or_exit  # the CLI's one way to load settings

    return settings_or_exit()


def _run(settings: Settings, body: Callable[[Pipeline], Awaitable[None]]) -> None:
    from wxkf.db.engine import Database, DatabaseError
    from wxkf.kf.runtime import Pipeline

    async def main() -> None:
        database = await Database.open(settings)
        try:
            async with Pipeline(settings, database) as pipeline:
                await body(pipeline)
        finally:
            await database.close()

    try:
        asyncio.run(main())
    except DatabaseError as exc:
        console.print(str(exc))
        raise typer.Exit(1) from None


def _step(title: str) -> None:
    console.print(f"\n{title}\n{RULE}")


async def _show_state(pipeline: Pipeline, conversation: Conversation) -> tuple[int, str | None]:
    state = await pipeline.states.get(conversation)
    console.print(f"✅ 当前状态 / state: {state_name(state.state)} (state={state.state})")
    if state.servicer_userid:
        console.print(f"   接待人员 / servicer: {state.servicer_userid}")
    return state.state, state.servicer_userid


def _session_command(
    title: str, action: Callable[[Pipeline, Conversation, int, str | None], Awaitable[None]]
) -> Callable[..., None]:
    def command(open_kfid: str, external_userid: str) -> None:
        from wxkf.kf.runtime import PipelineNotConfigured
        from wxkf.kf.service_state import explain_api_error

        settings = _settings()
        conversation = Conversation(open_kfid, external_userid)

        async def body(pipeline: Pipeline) -> None:
            console.print(f"🔧 {title}\n{'═' * 70}")
            console.print(
                f"📋 目标会话 / session:\n   open_kfid: {open_kfid}\n   external_userid: {external_userid}"
            )
            _step("📊 步骤1: 查询当前状态 / step 1: read the state")
            state, servicer = await _show_state(pipeline, conversation)
            await action(pipeline, conversation, state, servicer)

        try:
            _run(settings, body)
        except APIError as exc:
            console.print(f"❌ {explain_api_error(exc, conversation, title)}")
            raise typer.Exit(1) from None
        except (WeComError, PipelineNotConfigured) as exc:
            console.print(f"❌ {exc}")
            raise typer.Exit(1) from None

    return command


async def _noop(pipeline: Pipeline, conversation: Conversation, state: int, servicer: str | None) -> None:
    return None


async def _end(pipeline: Pipeline, conversation: Conversation, state: int, servicer: str | None) -> None:
    if state == 4:
        console.print("\n会话已经结束，无需操作 / the session is already ended")
        return
    _step(f"🔧 步骤2: 结束会话 / step 2: end the session (state={state} → state=4)")
    if state == 3 and servicer:
        console.print(f"💡 当前是人工接待状态，添加 servicer_userid: {servicer}")
    await pipeline.states.trans(conversation, 4, servicer if state == 3 else None)
    console.print("✅ 成功！会话已结束 / done: the session is ended")
    _step("📊 步骤3: 确认状态变更 / step 3: confirm")
    await _show_state(pipeline, conversation)
    console.print("\n🎉 客户再次发消息将开启新会话 / the customer's next message opens a new session")


def _transfer(
    servicer_userid: str | None,
) -> Callable[[Pipeline, Conversation, int, str | None], Awaitable[Any]]:
    async def action(
        pipeline: Pipeline, conversation: Conversation, state: int, servicer: str | None
    ) -> None:
        to_state = 3 if servicer_userid else 2
        target = f"接待人员 {servicer_userid}" if servicer_userid else "待接入池 / the queue"
        _step(f"🔧 步骤2: 转接 / step 2: transfer to {target} (state={state} → state={to_state})")
        await pipeline.states.trans(conversation, to_state, servicer_userid)
        console.print("✅ 成功 / done")
        _step("📊 步骤3: 确认状态变更 / step 3: confirm")
        await _show_state(pipeline, conversation)

    return action


@session_app.command("get")
def session_get(open_kfid: OpenKfid, external_userid: ExternalUserid) -> None:
    """查询会话状态 / read a customer's session state."""
    _session_command("查询会话状态 / session state", _noop)(open_kfid, external_userid)


@session_app.command("end")
def session_end(open_kfid: OpenKfid, external_userid: ExternalUserid) -> None:
    """强制结束会话（state → 4）/ end the session, with its servicer when a human serves."""
    _session_command("强制结束客服会话 / force-end the session", _end)(open_kfid, external_userid)


@session_app.command("transfer")
def session_transfer(
    open_kfid: OpenKfid,
    external_userid: ExternalUserid,
    servicer: Annotated[
        str | None, typer.Option(help="接待人员 userid；不填则放入待接入池 / omit for the queue")
    ] = None,
) -> None:
    """转人工：指定接待人员（state 3）或待接入池（state 2）/ hand the customer to a human."""
    _session_command("转接会话 / transfer the session", _transfer(servicer))(open_kfid, external_userid)
