"""`wxkf console …`: staff accounts for the console (the first admin comes from here)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from wxkf.config import Settings

T = TypeVar("T")

console_app = typer.Typer(help="管理控制台 / the staff console", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _password(from_stdin: bool, prompt: str) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))


def _on_database(settings: Settings, action: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
    """Run `action` on one autocommit connection; a refusal or a database error is a message, exit 1."""
    from wxkf.db.engine import Database, DatabaseError

    from .auth import ConsoleAuthError

    async def run() -> T:
        import psycopg

        database = await Database.open(settings)
        try:
            async with await psycopg.AsyncConnection.connect(database.conninfo, autocommit=True) as conn:
                return await action(conn)
        finally:
            await database.close()

    try:
        return asyncio.run(run())
    except (ConsoleAuthError, DatabaseError) as exc:
        err.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(1) from None


@console_app.command("add-user")
def add_user_command(
    username: Annotated[str, typer.Argument(help="登录名 / login name")],
    role: Annotated[str, typer.Option(help="admin（管理员）或 agent（接待人员）")] = "admin",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="从标准输入读取密码 / read the password from stdin")
    ] = False,
) -> None:
    """添加控制台账号（第一个管理员由此创建）/ add a console account (the first admin is made here)."""
    from wxkf.cli import settings_or_exit  # the surface's settings loader; imported late (it imports us)

    from .auth import add_user

    settings = settings_or_exit()
    password = _password(password_stdin, "密码 / password")
    _on_database(settings, lambda conn: add_user(conn, username, password, role))
    out.print(
        f"✅ 已添加 {role} 账号 {username.strip()}，登录 /console / added the {role} account; log in at /console",
        highlight=False,
        markup=False,
    )


@console_app.command("set-password")
def set_password_command(
    username: Annotated[str, typer.Argument(help="登录名 / login name")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="从标准输入读取密码 / read the password from stdin")
    ] = False,
) -> None:
    """设置新密码并解锁账号（该账号的会话全部结束）/ set a new password and unlock the account (its sessions end)."""
    from wxkf.cli import settings_or_exit  # the surface's settings loader; imported late (it imports us)

    from .auth import set_password_by_name

    settings = settings_or_exit()
    password = _password(password_stdin, "新密码 / new password")
    name = _on_database(settings, lambda conn: set_password_by_name(conn, username, password))
    out.print(
        f"✅ 已为 {name} 设置新密码并解锁 / new password set for {name}, and the account unlocked",
        highlight=False,
        markup=False,
    )


def demo_login(conninfo: str, base_url: str) -> str:
    """An admin account for the demo's own (fresh) database, and the line that tells how to log in."""
    import secrets

    import psycopg

    from .auth import add_user

    password = secrets.token_urlsafe(9)

    async def create() -> None:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await add_user(conn, "demo", password, "admin")

    asyncio.run(create())
    return (
        f"🖥️  控制台 / console: {base_url}/console  用户 / user: demo  密码 / password: {password}\n"
        "   在浏览器里看会话实时出现、接管并回复 / watch the conversation live, take it over and reply"
    )
