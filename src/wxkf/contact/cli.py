"""`wxkf contact …`: a member's customers, messages to them, and what became of each task."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from wxkf.contact.errors import ContactError, moment
from wxkf.wecom.errors import WeComError

# Message content (pydantic models), the service and the database (psycopg, httpx) load when a
# command runs: `wxkf --help` and the other commands start without them.
if TYPE_CHECKING:
    from wxkf.contact.service import CancelOutcome, ContactService, TaskCreated, TaskStatus
    from wxkf.wecom.models import TemplateAttachment

contact_app = typer.Typer(
    help="客户联系：员工发消息给客户 / customer contact: staff → customer messages", no_args_is_help=True
)
console = Console(width=160)
err_console = Console(stderr=True, width=160)

T = TypeVar("T")


def _times() -> tuple[Callable[[datetime | None], str], str]:
    """A table's times in CONTACT_TIMEZONE and the caption that says so, as every CLI table shows them."""
    from wxkf.cli import display_times  # lazily: wxkf.cli imports this module to register it

    return display_times()


def _zone() -> str:
    from wxkf.cli import settings_or_exit

    return settings_or_exit().contact_timezone


def _run(action: Callable[[ContactService], Awaitable[T]]) -> T:
    """Open settings, database and service; turn every known failure into a message and exit 1."""
    from wxkf.cli import settings_or_exit  # lazily: wxkf.cli imports this module to register it
    from wxkf.contact.service import open_contact_service
    from wxkf.db.engine import Database, DatabaseError

    settings = settings_or_exit()

    async def go() -> T:
        database = await Database.open(settings)
        try:
            async with open_contact_service(settings, database) as service:
                return await action(service)
        finally:
            await database.close()

    try:
        return asyncio.run(go())
    except (ContactError, WeComError, DatabaseError) as exc:
        err_console.print(f"❌ {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None


def _attachments(
    image: list[str], link: list[str], miniprogram: list[str], video: list[str], file: list[str]
) -> tuple[TemplateAttachment, ...]:
    from wxkf.contact.content import attachment

    out: list[TemplateAttachment] = []
    for value in image:
        key = "pic_url" if value.startswith(("http://", "https://")) else "media_id"
        out.append(attachment("image", **{key: value}))
    for value in link:
        parts = value.split("|")
        fields = dict(zip(("title", "url", "desc", "picurl"), parts, strict=False))
        out.append(attachment("link", **{k: v for k, v in fields.items() if v}))
    for value in miniprogram:
        parts = value.split("|")
        out.append(
            attachment(
                "miniprogram", **dict(zip(("title", "appid", "page", "pic_media_id"), parts, strict=False))
            )
        )
    out += [attachment("video", media_id=v) for v in video]
    out += [attachment("file", media_id=v) for v in file]
    return tuple(out)


ImageOpt = Annotated[
    list[str],
    typer.Option("--image", help="图片 media_id 或图片链接 / image media_id or pic_url (repeatable)"),
]
LinkOpt = Annotated[
    list[str], typer.Option("--link", help="链接 'title|url[|desc|picurl]' / a link (repeatable)")
]
MiniOpt = Annotated[
    list[str],
    typer.Option(
        "--miniprogram", help="小程序 'title|appid|page|pic_media_id' / a mini-program (repeatable)"
    ),
]
VideoOpt = Annotated[list[str], typer.Option("--video", help="视频 media_id / video media_id (repeatable)")]
FileOpt = Annotated[list[str], typer.Option("--file", help="文件 media_id / file media_id (repeatable)")]


def _print_created(created: TaskCreated) -> None:
    console.print(
        f"✅ 已创建群发任务 / task created: {created.msgid}\n   客户 / customers: {len(created.recipients)}",
        highlight=False,
    )
    console.print(
        "   成员需在企业微信「客户联系 → 群发助手」确认后才会发送 / the member must confirm it in WeCom "
        "before anything is sent",
        highlight=False,
    )
    if created.notified:
        console.print(f"   已通知成员 {created.sender} / member notified", highlight=False)
    elif created.notify_error:
        console.print(f"   ⚠ {created.notify_error}", highlight=False)
    if created.fail_list:
        console.print(
            f"⚠ 企业微信无法发送给 {len(created.fail_list)} 位（不是该成员的客户或 ID 无效）/ WeCom cannot send "
            f"to these (not the member's customers, or invalid): {', '.join(created.fail_list)}",
            highlight=False,
        )
    for capped in created.capped:
        console.print(f"⚠ 已跳过 / skipped: {capped.describe()}", highlight=False)


@contact_app.command()
def customers(
    member: Annotated[str, typer.Argument(help="成员 userid / member userid")],
    page: Annotated[int, typer.Option(min=1, help="页码 / page number")] = 1,
    page_size: Annotated[int, typer.Option(min=1, max=100, help="每页条数 (≤100) / rows per page")] = 20,
    refresh: Annotated[bool, typer.Option(help="忽略缓存 / bypass the cache")] = False,
) -> None:
    """列出成员的客户 / list a member's customers (externalcontact/list + get, cached)."""
    result = _run(lambda s: s.customers(member, page=page, page_size=page_size, refresh=refresh))
    when, caption = _times()
    table = Table(
        title=f"{member} 的客户 / customers — 第 {result.page}/{result.pages} 页, 共 {result.total}",
        caption=caption,
    )
    for column in ("external_userid", "名称 / name", "备注 / remark", "企业 / corp", "添加时间 / added"):
        table.add_column(column, overflow="fold")
    for c in result.customers:
        table.add_row(c.external_userid, c.name, c.remark, c.corp_name, when(c.added_at))
    console.print(table)


@contact_app.command()
def send(
    member: Annotated[str, typer.Argument(help="发送成员 userid / sending member")],
    external_userid: Annotated[str, typer.Argument(help="客户 external_userid / the customer")],
    text: Annotated[str, typer.Argument(help="文字（≤4000 字节）/ text, at most 4000 bytes")] = "",
    image: ImageOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    link: LinkOpt = [],  # noqa: B006
    miniprogram: MiniOpt = [],  # noqa: B006
    video: VideoOpt = [],  # noqa: B006
    file: FileOpt = [],  # noqa: B006
) -> None:
    """发消息给一位客户（需成员确认）/ send one customer a message (the member confirms it)."""

    async def go(service: ContactService) -> TaskCreated:
        from wxkf.contact.content import MessageContent

        content = MessageContent(text, _attachments(image, link, miniprogram, video, file))
        return await service.send(member, external_userid, content)

    _print_created(_run(go))


@contact_app.command()
def broadcast(
    member: Annotated[str, typer.Argument(help="发送成员 userid / sending member")],
    text: Annotated[str, typer.Argument(help="文字（≤4000 字节）/ text, at most 4000 bytes")] = "",
    to: Annotated[
        list[str],
        typer.Option("--to", help="客户 external_userid，可重复或逗号分隔 / customers (repeatable)"),
    ] = [],  # noqa: B006
    all_customers: Annotated[
        bool, typer.Option("--all", help="该成员的全部客户 / all the member's customers")
    ] = False,
    image: ImageOpt = [],  # noqa: B006
    link: LinkOpt = [],  # noqa: B006
    miniprogram: MiniOpt = [],  # noqa: B006
    video: VideoOpt = [],  # noqa: B006
    file: FileOpt = [],  # noqa: B006
) -> None:
    """群发给多位客户（≤10000，需成员确认）/ send many customers a message (the member confirms it)."""
    ids = [u for value in to for u in value.split(",") if u.strip()]
    if all_customers == bool(ids):
        err_console.print("❌ 请给出 --to 或 --all 之一 / give either --to or --all", highlight=False)
        raise typer.Exit(2)

    async def go(service: ContactService) -> TaskCreated:
        from wxkf.contact.content import MessageContent

        content = MessageContent(text, _attachments(image, link, miniprogram, video, file))
        return await service.broadcast(member, None if all_customers else ids, content)

    _print_created(_run(go))


def print_status(status: TaskStatus) -> None:
    from wxkf.contact.service import CUSTOMER_STATUS

    zone = _zone()
    console.print(
        f"群发任务 / task {status.msgid}" + ("（已取消 / cancelled）" if status.cancelled else ""),
        highlight=False,
    )
    for m in status.members:
        when = f" {moment(m.send_time, zone)}" if m.send_time else ""
        console.print(f"  成员 / member {m.userid}: {m.explanation}{when}", highlight=False)
    table = Table(show_header=True)
    table.add_column("状态 / status")
    table.add_column("客户数 / customers", justify="right")
    for code, count in sorted(status.counts().items()):
        table.add_row(f"{code} {CUSTOMER_STATUS.get(code, '?')}", str(count))
    console.print(table)
    for failure in status.failures:
        console.print(f"  ✗ {failure.external_userid}: {failure.explanation}", highlight=False)


@contact_app.command()
def status(msgid: Annotated[str, typer.Argument(help="群发任务 msgid / task msgid")]) -> None:
    """查看群发任务的发送结果 / show who received a task and who did not."""
    print_status(_run(lambda s: s.status(msgid)))


@contact_app.command()
def remind(msgid: Annotated[str, typer.Argument(help="群发任务 msgid / task msgid")]) -> None:
    """提醒成员发送（24 小时内最多 3 次）/ remind the member to send (3 times per 24 h)."""
    left = _run(lambda s: s.remind(msgid))
    console.print(f"✅ 已提醒 / reminded; 24 小时内还可提醒 {left} 次 / {left} more today", highlight=False)


@contact_app.command()
def cancel(msgid: Annotated[str, typer.Argument(help="群发任务 msgid / task msgid")]) -> None:
    """停止群发任务 / cancel a task members have not sent yet."""
    _print_cancelled(_run(lambda s: s.cancel(msgid)))


def _print_cancelled(outcome: CancelOutcome) -> None:
    freed = (
        f"{outcome.freed} 位未发送客户不再计入接收上限 / {outcome.freed} unsent customers no longer count "
        "against the receive cap"
    )
    if not outcome.sent:
        head = (
            f"✅ 已取消 / cancelled {outcome.msgid}：{outcome.stopped} 位成员无需再发送 / "
            f"{outcome.stopped} member(s) no longer need to send it"
        )
    elif outcome.stopped:
        head = (
            f"✅ 已停止 {outcome.msgid} 的未发送部分：{outcome.stopped} 位成员无需再发送，{outcome.sent} 位成员"
            f"已发送（客户已收到，无法撤回）/ stopped for {outcome.stopped} member(s) who had not sent; "
            f"{outcome.sent} had already sent it (received, cannot be undone)"
        )
    else:  # every member sent it between the check and the cancel
        head = (
            f"⚠ 群发任务 {outcome.msgid} 的成员均已发送，没有可停止的部分 / every member of task "
            f"{outcome.msgid} had already sent it: nothing was stopped"
        )
    console.print(f"{head}\n   {freed}", highlight=False)


@contact_app.command()
def tasks(
    days: Annotated[int, typer.Option(min=1, max=31, help="最近几天（≤31）/ look back this many days")] = 30,
    creator: Annotated[str | None, typer.Option(help="只看此成员创建的 / only this creator")] = None,
) -> None:
    """列出过去的群发任务 / list past tasks (get_groupmsg_list_v2)."""
    now = datetime.now(UTC)
    found = _run(lambda s: s.tasks(start=now - timedelta(days=days), end=now, creator=creator))
    when, caption = _times()
    table = Table(title="群发任务 / tasks", caption=caption)
    for column in (
        "msgid",
        "创建者 / creator",
        "时间 / created",
        "内容 / text",
        "附件 / att.",
        "本服务 / local",
    ):
        table.add_column(column, overflow="fold")
    for t in found:
        table.add_row(
            t.msgid,
            t.creator,
            when(t.created_at),
            t.text[:60],
            str(t.attachments),
            "✓" if t.local else "",
        )
    console.print(table)


@contact_app.command()
def chat(member: Annotated[str, typer.Argument(help="以此成员身份对话 / talk as this member")]) -> None:
    """与员工助手对话（查客户、发消息需确认）/ talk to the staff assistant (sending needs your yes)."""
    from openai.types.chat import ChatCompletionMessageParam

    from wxkf.agent.llm import LLMClient, LLMError
    from wxkf.agent.tools import ToolAudit
    from wxkf.cli import settings_or_exit
    from wxkf.contact.assistant import StaffAssistant
    from wxkf.contact.tools import ContactTools

    settings = settings_or_exit()
    llm = LLMClient.from_settings(settings)
    if llm is None:
        err_console.print("❌ 未配置 LLM_API_KEY / DEEPSEEK_API_KEY / no LLM key configured", highlight=False)
        raise typer.Exit(2)
    model = llm

    async def converse(service: ContactService) -> None:
        assistant = StaffAssistant(model, ContactTools(service), ToolAudit(service.database))
        history: list[ChatCompletionMessageParam] = []
        try:
            while True:
                try:
                    line = await asyncio.to_thread(input, f"{member}> ")
                except EOFError:
                    return
                if line.strip() in {"", "exit", "quit", "退出"}:
                    return
                try:
                    answer = await assistant.ask(member, history, line)
                except LLMError as exc:
                    err_console.print(f"❌ {exc}", highlight=False, markup=False)
                    continue
                console.print(answer, highlight=False, markup=False)
        finally:
            await model.aclose()

    _run(converse)
