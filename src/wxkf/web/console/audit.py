"""The audit log: one row for every staff action (who, what, on which conversation or document, from where)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from wxkf.db.text import db_json

from .auth import Staff

_INSERT = """
INSERT INTO console_audit (user_id, username, action, target, detail, ip) VALUES (%s, %s, %s, %s, %s, %s)
"""
_RECENT = """
SELECT at, username, action, target, detail, ip FROM console_audit
WHERE (%(action)s::text IS NULL OR action = %(action)s) ORDER BY id DESC LIMIT %(limit)s
"""
_FOR_TARGET = "SELECT at, username, action, detail FROM console_audit WHERE target = %s ORDER BY id"

# What each action means, for the audit page and the transcript.
ACTIONS = {
    "login": "登录 / logged in",
    "login_failed": "登录失败 / login refused",
    "logout": "退出 / logged out",
    "takeover": "接管会话 / took over",
    "reply": "人工回复 / replied",
    "reply_refused": "回复被拒绝 / reply refused",
    "handback": "交还机器人 / handed back",
    "transfer": "转企业微信接待人员 / transferred in WeCom",
    "end_session": "结束会话 / ended the session",
    "kb_upload": "上传知识库文档 / uploaded a document",
    "kb_delete": "删除知识库文档 / deleted a document",
    "kb_reindex": "重新索引 / re-indexed",
    "unanswered_entry": "未解答问题转为知识条目 / turned a question into an entry",
    "push_intent_add": "新建推送意图 / created a push intent",
    "push_intent_cancel": "取消推送意图 / cancelled a push intent",
    "push_profile_add": "新增资料 / added a profile",
    "push_profile_import": "导入资料 / imported profiles",
    "push_template_save": "保存推送模板 / saved a push template",
    "push_template_delete": "删除推送模板 / deleted a push template",
    "user_add": "添加账号 / added an account",
    "user_disable": "停用账号 / disabled an account",
    "user_enable": "启用账号 / enabled an account",
    "user_unlock": "解锁账号 / unlocked an account",
    "user_password": "重设密码 / set a password",
}


def conversation_target(open_kfid: str, external_userid: str) -> str:
    return f"conversation:{open_kfid}/{external_userid}"


async def record(
    conn: AsyncConnection[Any],
    *,
    user_id: int | None,
    username: str,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    ip: str = "",
) -> None:
    await conn.execute(
        _INSERT,
        (user_id, username, action, target, db_json(detail or {}, ensure_ascii=False), ip),
    )


async def staff_action(
    conn: AsyncConnection[Any],
    staff: Staff,
    action: str,
    *,
    target: str = "",
    detail: dict[str, Any] | None = None,
    ip: str = "",
) -> None:
    """`record` for what a logged-in staff member did."""
    await record(
        conn, user_id=staff.id, username=staff.username, action=action, target=target, detail=detail, ip=ip
    )


async def recent(
    conn: AsyncConnection[Any], *, action: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_RECENT, {"action": action or None, "limit": limit})
        return list(await cur.fetchall())


async def for_target(conn: AsyncConnection[Any], target: str) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_FOR_TARGET, (target,))
        return list(await cur.fetchall())
