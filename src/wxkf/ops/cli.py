"""`wxkf doctor`: the checks of `wxkf.ops.doctor` as a rich table, or JSON for machines."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

# The checks (httpx, psycopg, the WeCom client) load when `wxkf doctor` runs, not for `wxkf --help`.
if TYPE_CHECKING:
    from wxkf.ops.doctor import DoctorReport


def render(report: DoctorReport, console: Console) -> None:
    table = Table(title="wxkf doctor", show_lines=True)
    table.add_column("", no_wrap=True)
    table.add_column("检查 / check", no_wrap=True)
    table.add_column("结果 / result", overflow="fold")
    table.add_column("解决方法 / fix", overflow="fold")
    for result in report.results:
        fix = result.fix + (f"\n→ {result.see}" if result.see else "")
        table.add_row(result.icon, result.title, result.detail, fix)
    console.print(table)
    warned = sum(1 for r in report.results if r.status == "warn")
    skipped = sum(1 for r in report.results if r.status == "skip")
    if report.ok and not warned and not skipped:
        console.print("✅ 全部通过 / all checks passed", highlight=False)
    elif report.ok:
        console.print(
            f"✅ 没有未通过的检查，{warned} 项警告，{skipped} 项跳过 / no check failed; "
            f"{warned} warning(s), {skipped} skipped",
            highlight=False,
        )
    else:
        failed = sum(1 for r in report.results if r.status == "fail")
        console.print(f"❌ {failed} 项未通过 / {failed} check(s) failed", highlight=False)


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="输出 JSON / print JSON for machines")] = False,
) -> None:
    """检查部署并给出修复方法 / check the deployment and say how to fix what is wrong."""
    from wxkf.ops.doctor import run_doctor

    report = asyncio.run(run_doctor())
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        render(report, Console(width=160))
    if not report.ok:
        raise typer.Exit(1)
