"""Where access_tokens live between calls, and how a refresh is kept to one at a time.

wecom-api §7.4: an access_token belongs to one (corp id, secret) pair, lasts about 7200 s, must be
cached ("不能频繁调用gettoken接口，否则会受到频率拦截"), and may be revoked early. A `TokenStore`
keeps one token per `TokenKey` and runs a refresh under a lock, so concurrent callers — coroutines
in one process with `MemoryTokenStore`, or processes on several machines with `PostgresTokenStore` —
cause one gettoken between them: whoever gets the lock second re-reads and finds a fresh token.

Secrets are never stored: the key holds the SHA-256 digest of the secret.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

# Refresh this long before WeCom's expiry, so a token never dies between our check and WeCom's.
REFRESH_EARLY = timedelta(minutes=5)


@dataclass(frozen=True)
class TokenKey:
    """One token per (corp id, secret): every app's token is separate (wecom-api §7.4)."""

    corp_id: str
    secret_digest: str

    @classmethod
    def for_secret(cls, corp_id: str, secret: str) -> TokenKey:
        return cls(corp_id, hashlib.sha256(secret.encode("utf-8")).hexdigest())


@dataclass(frozen=True)
class CachedToken:
    access_token: str
    expires_at: datetime  # WeCom's expiry (aware, UTC); `fresh()` applies the early margin

    def __repr__(self) -> str:  # the token itself must never reach a log line
        return f"CachedToken(access_token='***', expires_at={self.expires_at.isoformat()})"

    def fresh(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) < self.expires_at - REFRESH_EARLY


def usable(token: CachedToken | None, rejected: str | None) -> bool:
    """A stored token may be handed out: fresh, and not the one WeCom just refused."""
    return token is not None and token.fresh() and token.access_token != rejected


Fetch = Callable[[], Awaitable[CachedToken]]


class TokenStore(Protocol):
    """Storage for access_tokens with a refresh that runs once for all concurrent callers."""

    async def load(self, key: TokenKey) -> CachedToken | None:
        """The stored token, fresh or not; None when there is none."""
        ...

    async def refresh(self, key: TokenKey, fetch: Fetch, *, rejected: str | None = None) -> CachedToken:
        """Under the key's lock: re-read, return a `usable` token if one is there, else `fetch` and save.

        `rejected` is the token WeCom just refused (40001/40014/42001): it counts as invalid even if
        its expiry is still ahead, unless another caller has already replaced it.
        """
        ...

    async def aclose(self) -> None: ...


class MemoryTokenStore:
    """Tokens in this process only; an asyncio lock per key serialises refreshes."""

    def __init__(self) -> None:
        self._tokens: dict[TokenKey, CachedToken] = {}
        self._locks: dict[TokenKey, asyncio.Lock] = {}

    async def load(self, key: TokenKey) -> CachedToken | None:
        return self._tokens.get(key)

    async def save(self, key: TokenKey, token: CachedToken) -> None:
        """Put a token in directly (tests, or a token obtained elsewhere)."""
        self._tokens[key] = token

    async def refresh(self, key: TokenKey, fetch: Fetch, *, rejected: str | None = None) -> CachedToken:
        async with self._locks.setdefault(key, asyncio.Lock()):
            current = self._tokens.get(key)
            if current is not None and usable(current, rejected):
                return current
            token = await fetch()
            self._tokens[key] = token
            return token

    async def aclose(self) -> None:
        self._tokens.clear()


_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_LOAD_SQL = (
    "SELECT access_token, expires_at FROM wecom_access_tokens WHERE corp_id = %s AND secret_digest = %s"
)
_SAVE_SQL = """
    INSERT INTO wecom_access_tokens (corp_id, secret_digest, access_token, expires_at, refreshed_at)
    VALUES (%s, %s, %s, %s, now())
    ON CONFLICT (corp_id, secret_digest)
    DO UPDATE SET access_token = EXCLUDED.access_token, expires_at = EXCLUDED.expires_at, refreshed_at = now()
"""


class PostgresTokenStore:
    """Tokens in table `wecom_access_tokens`, shared by every process on the database.

    A refresh holds a transaction-scoped advisory lock keyed by corp id + secret digest, so across
    processes and machines one caller runs gettoken while the others wait, then read its token.
    Connections come from the process's pool (`wxkf.db.engine.Database.pool`, autocommit).
    """

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> None:
        self._pool = pool

    @staticmethod
    async def _read(conn: psycopg.AsyncConnection[Any], key: TokenKey) -> CachedToken | None:
        cursor = await conn.execute(_LOAD_SQL, (key.corp_id, key.secret_digest))
        row = await cursor.fetchone()
        if row is None:
            return None
        access_token, expires_at = row
        assert isinstance(access_token, str)
        assert isinstance(expires_at, datetime)
        return CachedToken(access_token, expires_at.astimezone(UTC))

    async def load(self, key: TokenKey) -> CachedToken | None:
        async with self._pool.connection() as conn:
            return await self._read(conn, key)

    async def save(self, key: TokenKey, token: CachedToken) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                _SAVE_SQL, (key.corp_id, key.secret_digest, token.access_token, token.expires_at)
            )

    async def refresh(self, key: TokenKey, fetch: Fetch, *, rejected: str | None = None) -> CachedToken:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_LOCK_SQL, (f"wecom_access_token:{key.corp_id}:{key.secret_digest}",))
            current = await self._read(conn, key)
            if current is not None and usable(current, rejected):
                return current
            # If fetch fails the transaction rolls back and the lock is released for the next caller.
            token = await fetch()
            await conn.execute(
                _SAVE_SQL, (key.corp_id, key.secret_digest, token.access_token, token.expires_at)
            )
            return token

    async def aclose(self) -> None:
        """Nothing to close: the pool belongs to the process."""
