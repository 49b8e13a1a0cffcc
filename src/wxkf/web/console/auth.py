"""Staff accounts, passwords, sessions and CSRF for the console — no FastAPI here.

- Passwords are argon2id hashes (`argon2-cffi`); verifying runs off the event loop.
- After `MAX_FAILED_LOGINS` wrong passwords in a row an account is locked for `LOCKOUT`; a correct
  password during the lockout is refused too, so guessing gains nothing. Every refusal (unknown name,
  wrong password, locked, disabled) reads the same and unknown names cost the same hash
  verification, so neither the words nor the timing tell which names exist. A locked-out admin is
  unlocked by another admin or by `wxkf console set-password`.
- A session is a signed cookie (itsdangerous) holding the user id, the account's `session_epoch`
  and the session's CSRF token. Logging out, disabling or a new password bumps the epoch, which
  ends every session of that account on every replica. The signing key is made once and kept in
  `console_secrets`, so all replicas on one database accept each other's cookies.
- Every form carries the session's CSRF token; a POST without it, or from another origin, is refused.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.rows import dict_row

Role = Literal["admin", "agent"]
ROLES: tuple[Role, ...] = ("admin", "agent")
ROLE_NAMES = {"admin": "管理员 / admin", "agent": "接待人员 / agent"}
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
# One answer for every refused login, so it never tells whether a name exists or is locked.
REFUSED = (
    f"用户名或密码错误。连续输错 {MAX_FAILED_LOGINS} 次，账号锁定 {LOCKOUT.seconds // 60} 分钟，管理员可解锁"
    f" / wrong username or password. After {MAX_FAILED_LOGINS} wrong passwords in a row an account is locked"
    f" for {LOCKOUT.seconds // 60} minutes; an admin can unlock it"
)
SESSION_SECONDS = 12 * 3600
MIN_PASSWORD_LENGTH = 8
USERNAME_MAX = 64

# OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane): about 0.1 s on a small server, where
# argon2-cffi's default (64 MiB, 3 passes, 4 lanes) took 0.5 s of a core per login attempt.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the name is unknown, so a miss takes as long as a wrong password."""
    return _hasher.hash(secrets.token_hex(16))


class ConsoleAuthError(Exception):
    """A refusal to show the staff member: the message is Chinese first, English beside it."""


@dataclass(frozen=True)
class Staff:
    """A logged-in staff member, as the pages see them."""

    id: int
    username: str
    role: Role
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConsoleAuthError(
            f"密码至少 {MIN_PASSWORD_LENGTH} 个字符 / the password needs at least {MIN_PASSWORD_LENGTH} characters"
        )


def check_username(username: str) -> str:
    name = username.strip()
    if not name or len(name) > USERNAME_MAX or any(c.isspace() for c in name):
        raise ConsoleAuthError(
            f"用户名须为 1–{USERNAME_MAX} 个字符且不含空格 / a username is 1-{USERNAME_MAX} characters without spaces"
        )
    return name


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise ConsoleAuthError("角色只能是 admin 或 agent / the role is admin or agent")


async def _verify(password_hash: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


# --- accounts ---------------------------------------------------------------------------------------

_INSERT_USER = """
INSERT INTO console_users (username, role, password_hash) VALUES (%s, %s, %s) RETURNING id
"""
_USER_BY_NAME = """
SELECT id, username, role, password_hash, disabled, failed_logins, locked_until, session_epoch
FROM console_users WHERE lower(username) = lower(%s)
"""
_USER_FOR_SESSION = "SELECT id, username, role, disabled, session_epoch FROM console_users WHERE id = %s"
# A lockout that has run out starts the count again (the right-hand sides read the old row).
_LOGIN_FAILED = """
UPDATE console_users SET
    failed_logins = CASE WHEN locked_until <= now() THEN 1 ELSE failed_logins + 1 END,
    locked_until = CASE
        WHEN (CASE WHEN locked_until <= now() THEN 1 ELSE failed_logins + 1 END) >= %s THEN now() + %s
        WHEN locked_until <= now() THEN NULL
        ELSE locked_until END
WHERE id = %s RETURNING failed_logins, locked_until
"""
_LOGIN_OK = (
    "UPDATE console_users SET failed_logins = 0, locked_until = NULL, last_login_at = now() WHERE id = %s"
)
_BUMP_EPOCH = "UPDATE console_users SET session_epoch = session_epoch + 1 WHERE id = %s"
_LIST_USERS = """
SELECT id, username, role, disabled, failed_logins, locked_until, created_at, last_login_at
FROM console_users ORDER BY lower(username)
"""
_SET_DISABLED = "UPDATE console_users SET disabled = %s, session_epoch = session_epoch + 1 WHERE id = %s RETURNING username"
_UNLOCK = "UPDATE console_users SET failed_logins = 0, locked_until = NULL WHERE id = %s RETURNING username"
_SET_PASSWORD = """
UPDATE console_users SET password_hash = %s, failed_logins = 0, locked_until = NULL,
    session_epoch = session_epoch + 1
WHERE id = %s RETURNING username
"""
_ROLE = "SELECT role FROM console_users WHERE id = %s"
_COUNT_ADMINS = "SELECT count(*) FROM console_users WHERE role = 'admin' AND NOT disabled AND id <> %s"


async def add_user(conn: AsyncConnection[Any], username: str, password: str, role: str) -> int:
    """Create an account; refuses a taken name, a short password or an unknown role."""
    name = check_username(username)
    checked_role = check_role(role)
    check_new_password(password)
    password_hash = await asyncio.to_thread(hash_password, password)
    try:
        cur = await conn.execute(_INSERT_USER, (name, checked_role, password_hash))
    except UniqueViolation:
        raise ConsoleAuthError(f"用户名 {name} 已存在 / the username {name} is taken") from None
    row = await cur.fetchone()
    assert row is not None  # RETURNING id
    return int(row[0])


async def list_users(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST_USERS)
        return list(await cur.fetchall())


async def set_disabled(conn: AsyncConnection[Any], user_id: int, disabled: bool, *, by: Staff) -> str:
    """Disable (ending its sessions) or enable an account; the last active admin cannot be disabled."""
    if disabled:
        await _keep_an_admin(conn, user_id, by)
    cur = await conn.execute(_SET_DISABLED, (disabled, user_id))
    return await _username_or_refuse(cur)


async def unlock(conn: AsyncConnection[Any], user_id: int) -> str:
    return await _username_or_refuse(await conn.execute(_UNLOCK, (user_id,)))


async def set_password(conn: AsyncConnection[Any], user_id: int, password: str) -> str:
    """A new password; every session of the account ends."""
    check_new_password(password)
    password_hash = await asyncio.to_thread(hash_password, password)
    return await _username_or_refuse(await conn.execute(_SET_PASSWORD, (password_hash, user_id)))


async def _keep_an_admin(conn: AsyncConnection[Any], user_id: int, by: Staff) -> None:
    if user_id == by.id:
        raise ConsoleAuthError("不能停用自己的账号 / you cannot disable your own account")
    target = await (await conn.execute(_ROLE, (user_id,))).fetchone()
    others = await (await conn.execute(_COUNT_ADMINS, (user_id,))).fetchone()
    if target is not None and target[0] == "admin" and others is not None and others[0] == 0:
        raise ConsoleAuthError("至少要保留一个可用的管理员 / at least one active admin must remain")


async def _username_or_refuse(cur: Any) -> str:
    row = await cur.fetchone()
    if row is None:
        raise ConsoleAuthError("没有这个账号 / no such account")
    return str(row[0])


@dataclass(frozen=True)
class LoginResult:
    user_id: int | None
    username: str
    epoch: int = 0
    role: Role = "agent"


async def authenticate(conn: AsyncConnection[Any], username: str, password: str) -> LoginResult:
    """Check a password; raise `ConsoleAuthError` (one message for every kind of miss but lockout)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_USER_BY_NAME, (username.strip(),))
        user = await cur.fetchone()
    if user is None:
        await _verify(_dummy_hash(), password)
        raise ConsoleAuthError(REFUSED)
    if user["locked_until"] is not None and user["locked_until"] > datetime.now(UTC):
        await _verify(_dummy_hash(), password)
        raise ConsoleAuthError(REFUSED)
    if not await _verify(user["password_hash"], password) or user["disabled"]:
        await conn.execute(_LOGIN_FAILED, (MAX_FAILED_LOGINS, LOCKOUT, user["id"]))
        raise ConsoleAuthError(REFUSED)
    await conn.execute(_LOGIN_OK, (user["id"],))
    return LoginResult(int(user["id"]), str(user["username"]), int(user["session_epoch"]), user["role"])


async def set_password_by_name(conn: AsyncConnection[Any], username: str, password: str) -> str:
    """`wxkf console set-password`: a new password for the account named, which also unlocks it."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_USER_BY_NAME, (username.strip(),))
        user = await cur.fetchone()
    if user is None:
        raise ConsoleAuthError(f"没有这个账号：{username.strip()} / no such account")
    return await set_password(conn, int(user["id"]), password)


async def end_sessions(conn: AsyncConnection[Any], user_id: int) -> None:
    """Log the account out everywhere (its cookies carry the old epoch)."""
    await conn.execute(_BUMP_EPOCH, (user_id,))


# --- cookies ----------------------------------------------------------------------------------------

SESSION_COOKIE = "wxkf_console"
LOGIN_COOKIE = "wxkf_console_login"  # carries the login form's CSRF token before there is a session
FLASH_COOKIE = "wxkf_console_flash"

_SECRET_NAME = "session_key"
_ENSURE_SECRET = "INSERT INTO console_secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING"
_READ_SECRET = "SELECT value FROM console_secrets WHERE name = %s"


async def signing_key(conn: AsyncConnection[Any]) -> str:
    """The cookie signing key, made by the first process that needs it."""
    await conn.execute(_ENSURE_SECRET, (_SECRET_NAME, secrets.token_urlsafe(48)))
    row = await (await conn.execute(_READ_SECRET, (_SECRET_NAME,))).fetchone()
    assert row is not None  # ensured above
    return str(row[0])


class CookieSigner:
    """Signs and reads the console's cookies."""

    def __init__(self, key: str) -> None:
        self._session = URLSafeTimedSerializer(key, salt="wxkf.console.session")
        self._login = URLSafeTimedSerializer(key, salt="wxkf.console.login")
        self._flash = URLSafeTimedSerializer(key, salt="wxkf.console.flash")

    def session(self, user_id: int, epoch: int) -> str:
        return self._session.dumps({"u": user_id, "e": epoch, "c": new_token()})

    def read_session(self, cookie: str | None) -> tuple[int, int, str] | None:
        data = _loads(self._session, cookie, SESSION_SECONDS)
        if not isinstance(data, dict):
            return None
        user_id, epoch, csrf = data.get("u"), data.get("e"), data.get("c")
        if isinstance(user_id, int) and isinstance(epoch, int) and isinstance(csrf, str):
            return user_id, epoch, csrf
        return None

    def login_token(self, token: str) -> str:
        return self._login.dumps(token)

    def read_login_token(self, cookie: str | None) -> str | None:
        data = _loads(self._login, cookie, 3600)
        return data if isinstance(data, str) else None

    def flash(self, kind: str, text: str) -> str:
        return self._flash.dumps([kind, text])

    def read_flash(self, cookie: str | None) -> tuple[str, str] | None:
        data = _loads(self._flash, cookie, 300)
        if isinstance(data, list) and len(data) == 2 and all(isinstance(x, str) for x in data):
            return data[0], data[1]
        return None


def _loads(serializer: URLSafeTimedSerializer, cookie: str | None, max_age: int) -> Any:
    if not cookie:
        return None
    try:
        return serializer.loads(cookie, max_age=max_age)
    except BadSignature:  # also expired ones (SignatureExpired is a BadSignature)
        return None


def new_token() -> str:
    return secrets.token_urlsafe(24)


def same_token(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


async def staff_for_session(conn: AsyncConnection[Any], session: tuple[int, int, str]) -> Staff | None:
    """The staff member a valid cookie names, unless the account was disabled or logged out since."""
    user_id, epoch, csrf = session
    row = await (await conn.execute(_USER_FOR_SESSION, (user_id,))).fetchone()
    if row is None:
        return None
    _, username, role, disabled, current_epoch = row
    if disabled or current_epoch != epoch:
        return None
    return Staff(int(user_id), str(username), role, csrf)
