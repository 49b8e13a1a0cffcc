"""`wxkf push intents|profiles|match|templates|history|prefs`: push notifications by hand.

wxkf push intents add wkXXX wmYYY --name 寻找AI合作伙伴 --require city=北京 --keyword AI
wxkf push profiles import people.csv          # every row checked first; bad rows by line; all or nothing
wxkf push match 12                            # match intent 12 now and start its pushes
wxkf push prefs set wkXXX wmYYY --quiet 23:00-07:30 --daily-limit 3
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from wxkf.push.statuses import HistoryStatus, IntentStatus, PushMode

if TYPE_CHECKING:
    from wxkf.push.models import Intent, Match, Profile
    from wxkf.push.service import PushService


class PushCommands(TyperGroup):
    """Every `wxkf push …` command, the sub-groups' too: a refusal (`PushError`: bad input, no such
    intent, an import with bad rows) is its message and exit 2, wherever the command raised it."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click context (typer vendors click)
        from wxkf.push.errors import PushError

        try:
            return super().invoke(ctx)
        except PushError as exc:
            raise _fail(str(exc)) from None


push_app = typer.Typer(
    cls=PushCommands,
    help="推送通知：意图、资料、匹配 / push notifications: intents, profiles, matches",
    no_args_is_help=True,
)
intents_app = typer.Typer(help="客户的意图 / customers' intents", no_args_is_help=True)
profiles_app = typer.Typer(help="资料库 / the profiles", no_args_is_help=True)
templates_app = typer.Typer(help="推送模板 / push templates", no_args_is_help=True)
prefs_app = typer.Typer(help="客户的推送设置 / a customer's push preferences", no_args_is_help=True)
push_app.add_typer(intents_app, name="intents")
push_app.add_typer(profiles_app, name="profiles")
push_app.add_typer(templates_app, name="templates")
push_app.add_typer(prefs_app, name="prefs")
console = Console(width=160, highlight=False)
err_console = Console(stderr=True, width=160, highlight=False)

T = TypeVar("T")
OpenKfid = Annotated[str, typer.Argument(help="客服账号 open_kfid (wk…)")]
ExternalUserid = Annotated[str, typer.Argument(help="客户 external_userid (wm…)")]


def _run(action: Callable[[PushService], Awaitable[T]]) -> T:
    """Open settings, database, pipeline and push; a failure of what push stands on (the database,
    WeCom, the media store) becomes a message and exit 1, a refusal is `PushCommands`' (exit 2)."""
    from wxkf.cli import settings_or_exit  # lazily: wxkf.cli imports this module to register it
    from wxkf.db.engine import Database, DatabaseError
    from wxkf.kf.runtime import Pipeline
    from wxkf.media.errors import MediaError
    from wxkf.push.service import PushService
    from wxkf.wecom.errors import WeComError

    settings = settings_or_exit()

    async def go() -> T:
        database = await Database.open(settings)
        try:
            async with Pipeline(settings, database) as pipeline:
                push = PushService(settings, pipeline)
                try:
                    return await action(push)
                finally:
                    await push.aclose()
        finally:
            await database.close()

    try:
        return asyncio.run(go())
    except (MediaError, WeComError, DatabaseError) as exc:
        err_console.print(f"❌ {exc}", markup=False)
        raise typer.Exit(1) from None


def _fail(message: str) -> typer.Exit:
    err_console.print(f"❌ {message}", markup=False)
    return typer.Exit(2)


def _conditions(values: list[str], option: str) -> list[dict[str, Any]]:
    """Each `--require`/`--prefer` value parsed; a bad one refused with its reason, in the words the
    console and the REST API use (`worded`), one line per problem."""
    from pydantic import ValidationError

    from wxkf.push.conditions import parse_condition
    from wxkf.validation import worded

    parsed = []
    for value in values:
        try:
            parsed.append(parse_condition(value).model_dump())
        except ValidationError as exc:  # the condition's own rule, in its words
            raise _fail("\n".join(worded(item, f"{option} {value}") for item in exc.errors())) from None
        except ValueError as exc:  # not in the shorthand at all
            raise _fail(f"{option} {value}: {exc}") from None
    return parsed


def _times() -> tuple[Callable[[datetime | None], str], str]:
    from wxkf.cli import display_times  # lazily: wxkf.cli imports this module to register it

    return display_times()


def _intent_table(intents: list[Intent]) -> Table:
    when, caption = _times()
    table = Table(
        "id",
        "客户 customer",
        "名称 name",
        "状态 status",
        "阈值",
        "条件 conditions",
        "创建 created",
        caption=caption,
    )
    for i in intents:
        parts = [c.describe() for c in i.conditions.required] + [
            f"~{c.describe()}" for c in i.conditions.preferred
        ]
        parts += [f"#{k}" for k in i.conditions.keywords]
        table.add_row(
            str(i.id),
            f"{i.open_kfid} {i.external_userid}",
            i.name,
            i.status,
            f"{i.threshold:.2f}",
            "；".join(parts),
            when(i.created_at),
        )
    return table


def _match_table(matches: list[Match]) -> Table:
    table = Table(
        "id", "意图 intent", "资料 profile", "分 score", "状态 status", "原因 reason", "说明 explanation"
    )
    for m in matches:
        table.add_row(
            str(m.id),
            f"{m.intent_id} {m.intent_name}",
            f"{m.profile_id} {m.profile_name}",
            f"{m.score:.2f}",
            m.status + (f" #{m.number}" if m.number else ""),
            m.reason or "",
            m.explanation,
        )
    return table


# --- intents --------------------------------------------------------------------------------------


@intents_app.command("list")
def intents_list(
    open_kfid: Annotated[str | None, typer.Option(help="客服账号 open_kfid")] = None,
    external_userid: Annotated[str | None, typer.Option(help="客户 external_userid")] = None,
    status: Annotated[IntentStatus | None, typer.Option(help="意图状态 / the intents' status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
) -> None:
    """列出意图 / list intents."""
    from wxkf.push.models import Owner

    owner = (
        Owner(open_kfid=open_kfid, external_userid=external_userid) if open_kfid and external_userid else None
    )
    intents = _run(lambda push: push.list_intents(owner, status=status, limit=limit))
    console.print(_intent_table(intents))


@intents_app.command("add")
def intents_add(
    open_kfid: OpenKfid,
    external_userid: ExternalUserid,
    name: Annotated[str, typer.Option(help="名称 / a short name")],
    description: Annotated[str, typer.Option(help="说明 / what the customer wants")] = "",
    require: Annotated[list[str], typer.Option(help="必须：city=北京、age>30、tags~创业 …（可重复）")] = [],  # noqa: B006
    prefer: Annotated[list[str], typer.Option(help="最好满足，写法同 --require（可重复）")] = [],  # noqa: B006
    keyword: Annotated[list[str], typer.Option(help="关键词（可重复）/ keyword")] = [],  # noqa: B006
    exclude: Annotated[
        list[str], typer.Option(help="排除的词（可重复）/ a word that rules a profile out")
    ] = [],  # noqa: B006
    threshold: Annotated[float | None, typer.Option(min=0, max=1, help="匹配阈值 / score needed")] = None,
    max_per_day: Annotated[int, typer.Option(min=1, max=20, help="每日最多推送 / pushes per day")] = 3,
    template: Annotated[str | None, typer.Option(help="推送模板名 / template name")] = None,
) -> None:
    """新建意图并开始匹配 / create an intent (matching starts in the worker)."""
    from wxkf.push.errors import validated
    from wxkf.push.models import IntentIn

    data = {
        "open_kfid": open_kfid,
        "external_userid": external_userid,
        "name": name,
        "description": description,
        "conditions": {
            "required": _conditions(require, "--require"),
            "preferred": _conditions(prefer, "--prefer"),
            "keywords": keyword,
            "excluded": exclude,
        },
        "threshold": threshold,
        "max_pushes_per_day": max_per_day,
        "template": template,
    }
    intent = _run(lambda push: push.create_intent(validated(IntentIn, data), created_by="cli"))
    console.print(f"✅ 意图 {intent.id} 已创建，匹配任务已排队 / intent {intent.id} created, matching queued")


@intents_app.command("show")
def intents_show(intent_id: int) -> None:
    """意图详情与匹配 / an intent and its matches."""

    async def show(push: PushService) -> tuple[Intent, list[Match]]:
        return await push.get_intent(intent_id), await push.list_matches(intent_id=intent_id)

    intent, matches = _run(show)
    console.print(_intent_table([intent]))
    console.print(_match_table(matches))


@intents_app.command("cancel")
def intents_cancel(intent_id: int) -> None:
    """取消意图 / cancel an intent."""
    intent = _run(lambda push: push.set_intent_status(intent_id, "cancelled"))
    console.print(f"✅ 意图 {intent.id} 已取消 / cancelled")


# --- profiles -------------------------------------------------------------------------------------


def _profile_table(profiles: list[Profile]) -> Table:
    when, caption = _times()
    table = Table(
        "id",
        "姓名 name",
        "城市 city",
        "公司 company",
        "职位 position",
        "标签 tags",
        "v",
        "更新 updated",
        caption=caption,
    )
    for p in profiles:
        table.add_row(
            str(p.id),
            p.name,
            p.city or "",
            p.company or "",
            p.position or "",
            "、".join(p.tags),
            str(p.version),
            when(p.updated_at),
        )
    return table


@profiles_app.command("list")
def profiles_list(
    q: Annotated[str | None, typer.Option(help="搜索文字 / text to search")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
) -> None:
    """列出资料 / list profiles."""
    console.print(_profile_table(_run(lambda push: push.list_profiles(query=q, limit=limit))))


@profiles_app.command("add")
def profiles_add(
    name: Annotated[str, typer.Option(help="姓名 / name")],
    city: Annotated[str | None, typer.Option()] = None,
    company: Annotated[str | None, typer.Option()] = None,
    position: Annotated[str | None, typer.Option()] = None,
    industry: Annotated[str | None, typer.Option()] = None,
    age: Annotated[int | None, typer.Option()] = None,
    description: Annotated[str, typer.Option()] = "",
    tag: Annotated[list[str], typer.Option(help="标签（可重复）/ tag")] = [],  # noqa: B006
    attr: Annotated[list[str], typer.Option(help="其他属性 key=value（可重复）")] = [],  # noqa: B006
    external_ref: Annotated[str | None, typer.Option(help="你们自己的编号 / your own id")] = None,
) -> None:
    """新增资料并匹配 / add a profile (matched in the worker)."""
    from wxkf.push.errors import validated
    from wxkf.push.models import ProfileIn

    attributes: dict[str, Any] = {}
    for item in attr:
        key, sep, value = item.partition("=")
        if not sep:
            raise _fail(f"--attr {item}: 写成 key=value / write key=value")
        attributes[key.strip()] = _number_or_text(value.strip())
    data = {
        "name": name,
        "city": city,
        "company": company,
        "position": position,
        "industry": industry,
        "age": age,
        "description": description,
        "tags": tag,
        "attributes": attributes,
        "external_ref": external_ref,
    }
    profile = _run(lambda push: push.create_profile(validated(ProfileIn, data), created_by="cli"))
    console.print(f"✅ 资料 {profile.id} 已添加 / profile {profile.id} added")


def _number_or_text(value: str) -> str | int | float:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


@profiles_app.command("show")
def profiles_show(profile_id: int) -> None:
    """资料详情 / one profile."""
    profile = _run(lambda push: push.get_profile(profile_id))
    console.print_json(profile.model_dump_json())


@profiles_app.command("remove")
def profiles_remove(profile_id: int) -> None:
    """删除资料（未推送的匹配一并撤回）/ remove a profile and its undelivered matches."""
    _run(lambda push: push.set_profile_status(profile_id, "deleted"))
    console.print(f"✅ 资料 {profile_id} 已删除 / removed")


@profiles_app.command("import")
def profiles_import(
    file: Annotated[Path, typer.Argument(help=".csv 或 .jsonl（docs/push.md）", exists=False)],
) -> None:
    """导入资料：逐行校验，有错误的行按行号列出，全部正确才导入 / import a .csv or .jsonl: all rows or none."""
    from rich.progress import Progress

    from wxkf.push.importing import read_profiles

    with Progress(console=err_console, transient=False) as progress:
        checking = progress.add_task("校验 / checking", total=None)
        profiles = read_profiles(  # a refusal stops the progress display on its way out
            file, progress=lambda done, total: progress.update(checking, completed=done, total=total)
        )
        writing = progress.add_task("写入 / writing", total=len(profiles))
        ids = _run(
            lambda push: push.import_profiles(
                profiles, progress=lambda done: progress.update(writing, completed=done)
            )
        )
    console.print(
        f"✅ 已导入 {len(profiles)} 行，{len(ids)} 份资料新增或更新，匹配任务已排队 / imported {len(profiles)} rows, "
        f"{len(ids)} profiles added or changed; matching queued"
    )


@profiles_app.command("extract")
def profiles_extract(
    file: Annotated[
        Path | None, typer.Argument(help="文字文件（简介或转发的聊天记录）；省略则读标准输入")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="不询问，直接保存 / save without asking")] = False,
) -> None:
    """用大模型从文字中提取一份资料，确认后保存 / read a profile from free text with the LLM; saved after you confirm."""
    import sys

    from wxkf.agent.llm import LLMClient
    from wxkf.push.extraction import extract_profile

    text = file.read_text(encoding="utf-8") if file else sys.stdin.read()

    async def extract(push: PushService) -> Any:
        llm = LLMClient.from_settings(push.settings)
        if llm is None:
            from wxkf.push.errors import ExtractionError

            raise ExtractionError(
                "未配置大模型（LLM_API_KEY），无法提取 / no LLM configured: set LLM_API_KEY"
            )
        try:
            return await extract_profile(llm, text)
        finally:
            await llm.aclose()

    profile = _run(extract)
    console.print_json(profile.model_dump_json(exclude_none=True))
    if not yes and not typer.confirm("保存这份资料？/ save this profile?", default=False):
        console.print("未保存 / not saved")
        raise typer.Exit(0)
    saved = _run(lambda push: push.create_profile(profile, created_by="llm-extract"))
    console.print(f"✅ 资料 {saved.id} 已保存 / profile {saved.id} saved")


# --- match, history -------------------------------------------------------------------------------


@push_app.command("match")
def match(intent_id: int) -> None:
    """立即匹配一个意图并开始推送 / match an intent now and start its pushes."""
    run, matches = _run(lambda push: push.match_now(intent_id))
    console.print(
        f"评估 {run.scored} 份资料，新匹配 {run.recorded}，模型否决 {run.rejected} / scored {run.scored}, "
        f"{run.recorded} new match(es), {run.rejected} rejected by the LLM"
    )
    console.print(_match_table(matches))


@push_app.command("history")
def history(
    open_kfid: Annotated[str | None, typer.Option()] = None,
    external_userid: Annotated[str | None, typer.Option()] = None,
    intent: Annotated[int | None, typer.Option(help="意图 id")] = None,
    status: Annotated[HistoryStatus | None, typer.Option(help="推送状态 / the pushes' status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
) -> None:
    """推送记录与未发送的原因 / push history, with why a push was not sent."""
    from wxkf.push.models import Owner

    owner = (
        Owner(open_kfid=open_kfid, external_userid=external_userid) if open_kfid and external_userid else None
    )
    entries = _run(lambda push: push.history(owner=owner, intent_id=intent, status=status, limit=limit))
    when, caption = _times()
    table = Table(
        "时间 at",
        "客户 customer",
        "匹配 match",
        "意图 intent",
        "状态 status",
        "原因 reason",
        "预定 due",
        "送达 delivery",
        caption=caption,
    )
    for e in entries:
        table.add_row(
            when(e.at),
            e.external_userid,
            str(e.match_id),
            str(e.intent_id),
            e.status,
            e.explanation or "",
            when(e.due_at),
            e.delivery or "",
        )
    console.print(table)


# --- templates ------------------------------------------------------------------------------------


@templates_app.command("list")
def templates_list() -> None:
    """列出模板 / list templates."""
    for name, template in _run(lambda push: push.list_templates()):
        console.print(f"[bold]{name}[/bold] ({template.kind})", markup=True)
        console.print(
            json.dumps(template.model_dump(exclude={"kind"}), ensure_ascii=False, indent=2), markup=False
        )


@templates_app.command("set")
def templates_set(
    name: str,
    text: Annotated[
        str | None, typer.Option(help="单个匹配的文字，可用 {profile_name} {intent_name} {score} …")
    ] = None,
    merged: Annotated[str | None, typer.Option(help="多个匹配合并时的文字：{count} {items} …")] = None,
    item: Annotated[str | None, typer.Option(help="合并消息里每个匹配一行")] = None,
    appid: Annotated[str | None, typer.Option(help="小程序 appid：设置则为小程序卡片模板")] = None,
    pagepath: Annotated[str | None, typer.Option(help="小程序页面，可用 {match_id} 等")] = None,
    title: Annotated[str | None, typer.Option(help="卡片标题")] = None,
    thumb: Annotated[Path | None, typer.Option(help="封面图 JPG/PNG（520×416）")] = None,
) -> None:
    """保存模板：未知占位符会被拒绝 / save a template (an unknown placeholder is refused, by name)."""
    from wxkf.push.errors import validated
    from wxkf.push.templates import MiniProgramTemplate, Template, TextTemplate

    async def save(push: PushService) -> Template:
        template: Template
        if appid:
            if thumb is None or pagepath is None:
                raise _fail("小程序模板需要 --pagepath 和 --thumb / a card needs --pagepath and --thumb")
            try:
                cover = thumb.read_bytes()
            except OSError as exc:
                raise _fail(f"无法读取 {thumb}: {exc.strerror}") from None
            fields = {"appid": appid, "pagepath": pagepath, "thumb": await push.save_thumb(cover, thumb.name)}
            template = validated(MiniProgramTemplate, {**fields, **({"title": title} if title else {})})
        else:
            texts = {
                k: v for k, v in (("content", text), ("merged", merged), ("item", item)) if v is not None
            }
            template = validated(TextTemplate, texts)
        return await push.save_template(name, template)

    _run(save)
    console.print(f"✅ 模板 {name} 已保存 / template saved")


@templates_app.command("remove")
def templates_remove(name: str) -> None:
    """删除模板 / remove a template."""
    _run(lambda push: push.delete_template(name))
    console.print(f"✅ 模板 {name} 已删除 / removed")


# --- preferences ----------------------------------------------------------------------------------


@prefs_app.command("show")
def prefs_show(open_kfid: OpenKfid, external_userid: ExternalUserid) -> None:
    """客户的推送设置 / a customer's preferences."""
    from wxkf.push.models import Owner

    prefs = _run(lambda push: push.preferences(Owner(open_kfid=open_kfid, external_userid=external_userid)))
    console.print_json(prefs.model_dump_json())


@prefs_app.command("set")
def prefs_set(
    open_kfid: OpenKfid,
    external_userid: ExternalUserid,
    enable: Annotated[bool | None, typer.Option("--enable/--disable", help="开启或关闭推送")] = None,
    quiet: Annotated[str | None, typer.Option(help="静默时段 HH:MM-HH:MM，空串为不设")] = None,
    timezone: Annotated[str | None, typer.Option(help="时区，如 Asia/Shanghai")] = None,
    daily_limit: Annotated[int | None, typer.Option(min=0, max=100)] = None,
    min_score: Annotated[float | None, typer.Option(min=0, max=1)] = None,
    digest_hour: Annotated[
        int | None, typer.Option(min=-1, max=23, help="每日汇总的小时，-1 为不汇总")
    ] = None,
    mode: Annotated[PushMode | None, typer.Option(help="instant（即时）或 digest（只在汇总时推送）")] = None,
) -> None:
    """修改客户的推送设置 / change a customer's preferences."""
    from wxkf.push.errors import validated
    from wxkf.push.models import Owner, PreferencesPatch

    values = {
        "enabled": enable,
        "quiet_hours": quiet,
        "timezone": timezone,
        "daily_limit": daily_limit,
        "min_score": min_score,
        "digest_hour": digest_hour,
        "mode": mode,
    }
    patch = validated(PreferencesPatch, {k: v for k, v in values.items() if v is not None})
    prefs = _run(
        lambda push: push.set_preferences(Owner(open_kfid=open_kfid, external_userid=external_userid), patch)
    )
    console.print_json(prefs.model_dump_json())
