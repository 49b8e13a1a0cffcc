"""`wxkf llm …`: check the configured LLM, ask the agent a question, run the local fake LLM server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

# The openai SDK and the pipeline load inside the commands that use them: `wxkf --help` and the
# other commands start without them.
if TYPE_CHECKING:
    from wxkf.agent.llm import LLMClient
    from wxkf.config import Settings
    from wxkf.kf.responder import Reply

llm_app = typer.Typer(help="大模型与智能回复 / the LLM and the agent's answers", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _settings() -> Settings:
    from wxkf.cli import settings_or_exit  # the CLI's one settings loader; late: wxkf.cli imports this module

    return settings_or_exit()


@llm_app.command("check")
def check() -> None:
    """调用一次大模型，确认密钥和账户可用 / call the LLM once to check the key and the account."""
    from wxkf.agent.llm import LLMClient, LLMError

    settings = _settings()
    llm = LLMClient.from_settings(settings)
    if llm is None:
        err_console.print(
            "未配置大模型：设置 LLM_API_KEY 或 DEEPSEEK_API_KEY（未配置时使用离线知识库回复）/ "
            "no LLM configured: set LLM_API_KEY or DEEPSEEK_API_KEY (the offline responder answers meanwhile)",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(1)

    async def ping(client: LLMClient) -> str:
        try:
            completion = await client.complete([{"role": "user", "content": "请只回复：好"}])
        finally:
            await client.aclose()
        return completion.content

    try:
        answer = asyncio.run(ping(llm))
    except LLMError as exc:
        err_console.print(f"❌ {exc.message}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    console.print(
        f"✅ 大模型可用 / the LLM answers: {settings.llm_model} @ {settings.llm_base_url} → {answer[:40]!r}",
        highlight=False,
        markup=False,
    )


@llm_app.command("ask")
def ask(
    question: Annotated[str, typer.Argument(help="客户的问题 / the customer's question")],
    budget: Annotated[int, typer.Option(help="剩余可发消息数 / messages left in the 48 h window")] = 5,
) -> None:
    """用知识库（和已配置的大模型）回答一个问题 / answer a question as the agent would."""
    from wxkf.agent.responder import build_responder
    from wxkf.db.engine import Database, DatabaseError
    from wxkf.kf.responder import Conversation, InboundMessage, ReplyRequest

    settings = _settings()

    async def run() -> Reply:
        database = await Database.open(settings)
        try:
            responder = build_responder(settings, database)
            try:
                message = InboundMessage("cli", "text", {"content": question}, question, datetime.now(UTC))
                return await responder.respond(
                    ReplyRequest(Conversation("cli", "cli"), [message], remaining_budget=budget)
                )
            finally:
                await responder.aclose()
        finally:
            await database.close()

    try:
        reply = asyncio.run(run())
    except DatabaseError as exc:
        err_console.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(1) from None
    console.print(reply.text, highlight=False, markup=False)
    for source in reply.sources:
        console.print(f"  · 来源 / source: {source}", style="dim", highlight=False, markup=False)
    if reply.handoff:
        console.print("  → 转人工 / handed to a person", style="yellow", highlight=False, markup=False)


@llm_app.command("fake-server")
def fake_server(
    port: Annotated[
        int,
        typer.Option(min=1, max=65535, help="监听端口（1–65535，仅 127.0.0.1）/ listen port on 127.0.0.1"),
    ] = 8011,
    api_key: Annotated[str, typer.Option(help="the key it accepts")] = "sk-local",
) -> None:
    """运行本地模拟大模型（OpenAI 兼容）/ run the local fake OpenAI-compatible server."""
    from wxkf.agent.fake_openai import FakeOpenAI

    with FakeOpenAI(api_key=api_key, port=port) as fake:
        # One NAME=value a line, as the simulator prints its credentials: they paste into .env.
        for line in (
            "# 以下各行可原样粘贴到 .env；Ctrl-C 停止 / paste these lines into .env; Ctrl-C to stop",
            f"LLM_BASE_URL={fake.base_url}",
            f"LLM_API_KEY={api_key}",
        ):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
