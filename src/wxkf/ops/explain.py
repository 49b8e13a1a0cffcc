"""`wxkf explain <errcode|key>`: the catalog's cause and fix for one errcode or situation, in the terminal."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from wxkf.wecom.catalog import ENTRIES, GUIDE_PATH, CatalogEntry, entry_for, hint_for
from wxkf.wecom.errors import reported_ip

# Negative codes (-1, -40001) must reach the argument instead of being read as options.
CONTEXT_SETTINGS = {"ignore_unknown_options": True}
# HTTP statuses people paste from a failing request: no WeCom errcode has these numbers, and each
# has a situation of its own in the catalog.
HTTP_STATUSES = {"401": "llm-auth-401", "403": "network-403-404", "404": "network-403-404"}


def _steps(steps: tuple[str, ...], style: str = "") -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style=style)
    grid.add_column(style=style, overflow="fold")
    for number, step in enumerate(steps, start=1):
        grid.add_row(f"{number}.", step)
    return grid


def render(entry: CatalogEntry, errmsg: str = "") -> Panel:
    """The rich panel for one entry: official text, cause, fix and the guide's section."""
    parts: list[RenderableType] = []
    official = entry.official
    if official is not None:
        check = f"（{official.check_zh}）" if official.check_zh else ""
        parts += [Text.assemble(("官方说明 / Official: ", "bold"), official.description_zh + check), Text()]
    ip = reported_ip(errmsg)
    if ip:
        parts += [
            Text.assemble(("企业微信看到的来源 IP / IP WeCom saw: ", "bold"), (ip, "bold yellow")),
            Text(),
        ]
    parts += [Text("原因 / Cause", style="bold"), Text(entry.cause_zh), Text(entry.cause_en), Text()]
    parts += [Text("解决方法 / Fix", style="bold"), _steps(entry.fix_zh), _steps(entry.fix_en, "dim"), Text()]
    parts.append(Text.assemble(("详见 / see: ", "bold"), (entry.guide_link, "cyan")))
    code = f"{entry.errcode} " if entry.errcode is not None else ""
    title = Text(f"{code}{entry.title_zh} / {entry.title_en}", style="bold")
    return Panel(Group(*parts), title=title, title_align="left", border_style="red")


def explain(
    code: Annotated[
        str, typer.Argument(help="错误码或关键字 / errcode or key, e.g. 95018, pgvector-missing")
    ],
    errmsg: Annotated[
        str,
        typer.Option(
            help="企业微信返回的 errmsg（60020 时显示来源 IP）/ WeCom's errmsg, shows the IP for 60020"
        ),
    ] = "",
) -> None:
    """解释错误码或故障 / explain an errcode or a known problem, with cause and fix."""
    console = Console(highlight=False)
    entry = entry_for(HTTP_STATUSES.get(code.strip(), code))
    if entry is None:
        err = Console(stderr=True, highlight=False)
        err.print(f"未知的错误码或关键字 / unknown errcode or key: {code}")
        if code.lstrip("-").isdigit():
            err.print(hint_for(int(code)))
        else:
            keys = ", ".join(entry.key for entry in ENTRIES if entry.errcode is None)
            err.print(f"已知的关键字 / known keys: {keys}（详见 / see {GUIDE_PATH}）")
        raise typer.Exit(1)
    console.print(render(entry, errmsg))
