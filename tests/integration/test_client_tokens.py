"""access_token handling (wecom-api §7.4): cached, refreshed early, refreshed once when WeCom refuses
it, one gettoken across coroutines, clients and OS processes, and never written anywhere readable."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.integration.client_fake_server import CORP_ID, KFID, SECRET, USER, FakeWeCom, serve, wecom_error
from wxkf.db.engine import Database
from wxkf.wecom.client import RetryPolicy, WeComClient
from wxkf.wecom.errors import TokenError
from wxkf.wecom.tokens import CachedToken, MemoryTokenStore, PostgresTokenStore, TokenKey

KEY = TokenKey.for_secret(CORP_ID, SECRET)
FAST = RetryPolicy(base_delay=0.001)


@pytest.fixture
def fake() -> Iterator[FakeWeCom]:
    with serve(FakeWeCom()) as running:
        yield running


@pytest.fixture
def store() -> MemoryTokenStore:
    return MemoryTokenStore()


@pytest.fixture
async def client(fake: FakeWeCom, store: MemoryTokenStore) -> AsyncIterator[WeComClient]:
    async with WeComClient(fake.base_url, CORP_ID, SECRET, token_store=store, retry=FAST) as wecom:
        yield wecom


def tokens_used(fake: FakeWeCom, path: str) -> list[str]:
    return [call.params["access_token"] for call in fake.calls_to(path)]


async def test_token_is_fetched_once_and_cached(client: WeComClient, fake: FakeWeCom) -> None:
    await client.send_text(KFID, USER, "一")
    await client.send_text(KFID, USER, "二")
    await client.list_accounts()

    gettoken = fake.calls_to("/cgi-bin/gettoken")
    assert len(gettoken) == 1
    assert (gettoken[0].method, gettoken[0].params) == ("GET", {"corpid": CORP_ID, "corpsecret": SECRET})
    assert tokens_used(fake, "/cgi-bin/kf/send_msg") == [fake.issued[0]] * 2


async def test_concurrent_calls_in_one_process_share_one_gettoken(
    client: WeComClient, fake: FakeWeCom
) -> None:
    await asyncio.gather(*(client.send_text(KFID, USER, f"消息{i}") for i in range(20)))
    assert len(fake.calls_to("/cgi-bin/gettoken")) == 1
    assert len(fake.calls_to("/cgi-bin/kf/send_msg")) == 20


async def test_token_near_expiry_is_refreshed_and_a_fresh_one_is_reused(
    client: WeComClient, fake: FakeWeCom, store: MemoryTokenStore
) -> None:
    # 60 s left: inside the 5-minute margin, so the client must not risk it.
    fake.issued.append("OLD-TOKEN")
    await store.save(KEY, CachedToken("OLD-TOKEN", datetime.now(UTC) + timedelta(seconds=60)))
    await client.list_accounts()
    assert len(fake.calls_to("/cgi-bin/gettoken")) == 1
    assert tokens_used(fake, "/cgi-bin/kf/account/list") == [fake.issued[-1]]
    stored = await store.load(KEY)
    assert stored is not None
    assert stored.access_token == fake.issued[-1]
    # expires_in 7200 from gettoken sets the expiry.
    assert timedelta(seconds=7100) < stored.expires_at - datetime.now(UTC) <= timedelta(seconds=7200)


async def test_token_with_an_hour_left_is_used_as_is(fake: FakeWeCom, store: MemoryTokenStore) -> None:
    fake.issued.append("STILL-GOOD")
    await store.save(KEY, CachedToken("STILL-GOOD", datetime.now(UTC) + timedelta(hours=1)))
    async with WeComClient(fake.base_url, CORP_ID, SECRET, token_store=store, retry=FAST) as wecom:
        await wecom.list_accounts()
    assert fake.calls_to("/cgi-bin/gettoken") == []
    assert tokens_used(fake, "/cgi-bin/kf/account/list") == ["STILL-GOOD"]


@pytest.mark.parametrize(
    ("errcode", "text"),
    [(42001, "access_token expired"), (40014, "invalid access_token"), (40001, "invalid credential")],
)
async def test_refused_token_is_refreshed_once_and_the_call_retried(
    client: WeComClient, fake: FakeWeCom, errcode: int, text: str
) -> None:
    await client.list_accounts()
    fake.script("/cgi-bin/kf/send_msg", wecom_error(errcode, text))

    response = await client.send_text(KFID, USER, "你好")

    assert response.msgid == "MSG_ID_generated"
    assert len(fake.calls_to("/cgi-bin/gettoken")) == 2
    assert tokens_used(fake, "/cgi-bin/kf/send_msg") == [fake.issued[0], fake.issued[1]]


async def test_token_revoked_by_wecom_is_replaced(client: WeComClient, fake: FakeWeCom) -> None:
    await client.list_accounts()
    fake.revoke_all()
    await client.list_accounts()
    assert tokens_used(fake, "/cgi-bin/kf/account/list") == [fake.issued[0], fake.issued[0], fake.issued[1]]


async def test_a_token_refused_again_and_again_is_an_error_not_a_loop(
    client: WeComClient, fake: FakeWeCom
) -> None:
    """Each refusal gets a new token (under churn the new one may be revoked too), a few times."""
    from wxkf.wecom.client import MAX_TOKEN_REFRESHES

    fake.script("/cgi-bin/kf/send_msg", *[wecom_error(42001, "access_token expired")] * 9)
    with pytest.raises(TokenError) as caught:
        await client.send_text(KFID, USER, "你好")
    assert caught.value.errcode == 42001
    assert len(fake.calls_to("/cgi-bin/kf/send_msg")) == 1 + MAX_TOKEN_REFRESHES
    assert len(fake.calls_to("/cgi-bin/gettoken")) == 1 + MAX_TOKEN_REFRESHES


async def test_wrong_secret_fails_once_with_a_clean_error(fake: FakeWeCom, store: MemoryTokenStore) -> None:
    wrong = "wrong-secret-0123456789abcdefghijklmnop"
    async with WeComClient(fake.base_url, CORP_ID, wrong, token_store=store, retry=FAST) as wecom:
        with pytest.raises(TokenError) as caught:
            await wecom.send_text(KFID, USER, "你好")
    assert (caught.value.errcode, caught.value.api) == (40001, "gettoken")
    assert len(fake.calls_to("/cgi-bin/gettoken")) == 1
    assert fake.calls_to("/cgi-bin/kf/send_msg") == []
    assert wrong not in str(caught.value)
    assert wrong not in repr(wecom)


async def test_no_secret_or_token_in_any_log_line(
    client: WeComClient, fake: FakeWeCom, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script(
        "/cgi-bin/kf/send_msg",
        wecom_error(42001, "access_token expired"),
        wecom_error(45009, "api freq out of limit"),
    )
    await client.send_text(KFID, USER, "你好")

    assert len(fake.issued) == 2
    assert "HTTP Request" in caplog.text  # httpx does log each URL; the filter masks its query
    assert "access_token=***" in caplog.text
    for secret in (SECRET, *fake.issued):
        assert secret not in caplog.text
    api_errors = [r.getMessage() for r in caplog.records if r.name == "wxkf.wecom"]
    assert len(api_errors) == 2
    assert "api=kf/send_msg errcode=42001 attempt=1" in api_errors[0]
    assert "api=kf/send_msg errcode=45009 attempt=2" in api_errors[1]


async def test_postgres_store_shares_the_token_between_clients(
    fake: FakeWeCom, database: Database, database_url: str
) -> None:
    store = PostgresTokenStore(database.pool)
    async with (
        WeComClient(fake.base_url, CORP_ID, SECRET, token_store=store, retry=FAST) as first,
        WeComClient(fake.base_url, CORP_ID, SECRET, token_store=store, retry=FAST) as second,
    ):
        await asyncio.gather(first.list_accounts(), second.list_accounts())
        await asyncio.gather(first.list_accounts(), second.list_accounts())
    assert len(fake.calls_to("/cgi-bin/gettoken")) == 1

    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT corp_id, secret_digest, access_token FROM wecom_access_tokens").fetchall()
    # The secret itself is never stored, only its SHA-256.
    assert rows == [(CORP_ID, hashlib.sha256(SECRET.encode()).hexdigest(), fake.issued[0])]


async def test_postgres_store_replaces_a_refused_token_once(fake: FakeWeCom, database: Database) -> None:
    store = PostgresTokenStore(database.pool)
    async with (
        WeComClient(fake.base_url, CORP_ID, SECRET, token_store=store, retry=FAST) as first,
        WeComClient(fake.base_url, CORP_ID, SECRET, token_store=store, retry=FAST) as second,
    ):
        await asyncio.gather(first.list_accounts(), second.list_accounts())
        fake.revoke_all()
        # Both hold the revoked token; the second to refresh finds the first one's new token.
        await asyncio.gather(first.list_accounts(), second.list_accounts())
    assert len(fake.calls_to("/cgi-bin/gettoken")) == 2
    stored = await store.load(KEY)
    assert stored is not None
    assert stored.access_token == fake.issued[1]


NEED_TOKEN = """
import asyncio, os, sys
from wxkf.wecom.client import WeComClient
from wxkf.config import Settings
from wxkf.db.engine import Database
from wxkf.wecom.tokens import PostgresTokenStore

async def main() -> None:
    database = await Database.open(Settings(_env_file=None, database_url=os.environ["T_DATABASE_URL"]), migrate=False)
    store = PostgresTokenStore(database.pool)
    async with WeComClient(os.environ["T_API_BASE"], os.environ["T_CORP_ID"], os.environ["T_SECRET"], token_store=store) as c:
        accounts = await c.list_accounts()
    await database.close()
    print(accounts.account_list[0].open_kfid)

asyncio.run(main())
"""


def test_two_processes_needing_a_token_cause_one_gettoken(fake: FakeWeCom, database_url: str) -> None:
    saw_waiter = threading.Event()

    async def hold_gettoken_until_the_other_process_waits() -> None:
        # Inside the first process's gettoken: the second must be blocked on the advisory lock now.
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            for _ in range(1500):
                cursor = await conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
                row = await cursor.fetchone()
                if row is not None and row[0] >= 1:
                    saw_waiter.set()
                    return
                await asyncio.sleep(0.01)

    fake.before_gettoken = hold_gettoken_until_the_other_process_waits
    env = {
        **os.environ,
        "T_DATABASE_URL": database_url,
        "T_API_BASE": fake.base_url,
        "T_CORP_ID": CORP_ID,
        "T_SECRET": SECRET,
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", NEED_TOKEN],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [KFID, KFID]
    assert saw_waiter.is_set(), "the second process never waited on the refresh lock"
    assert len(fake.calls_to("/cgi-bin/gettoken")) == 1
    assert len(set(tokens_used(fake, "/cgi-bin/kf/account/list"))) == 1
