"""Retries with backoff for -1 / 45009 / 45033 and transport failures, bounded by attempts and deadline;
malformed answers become typed errors; no error text ever carries the secret or a token."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.integration.client_fake_server import (
    CORP_ID,
    KFID,
    SECRET,
    USER,
    FakeWeCom,
    Reply,
    serve,
    wecom_error,
)
from wxkf.wecom.client import RetryPolicy, WeComClient
from wxkf.wecom.errors import (
    MalformedResponseError,
    RateLimitedError,
    SessionStateError,
    TransportError,
    WeComError,
)
from wxkf.wecom.tokens import MemoryTokenStore

SEND = "/cgi-bin/kf/send_msg"
STATE = "/cgi-bin/kf/service_state/get"


@pytest.fixture
def fake() -> Iterator[FakeWeCom]:
    with serve(FakeWeCom()) as running:
        yield running


def make_client(fake: FakeWeCom, retry: RetryPolicy, timeout: float = 5.0) -> WeComClient:
    return WeComClient(
        fake.base_url, CORP_ID, SECRET, token_store=MemoryTokenStore(), retry=retry, timeout=timeout
    )


@pytest.fixture
async def client(fake: FakeWeCom) -> AsyncIterator[WeComClient]:
    async with make_client(fake, RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01)) as wecom:
        yield wecom


def assert_clean(error: BaseException, fake: FakeWeCom) -> None:
    text = f"{error}\n{error!r}\n{error.__cause__!r}"
    for secret in (SECRET, *fake.issued):
        assert secret not in text


@pytest.mark.parametrize(
    ("errcode", "text"),
    [(45009, "api freq out of limit"), (-1, "system busy"), (45033, "api concurrent out of limit")],
)
async def test_throttling_and_busy_are_retried_then_succeed(
    client: WeComClient, fake: FakeWeCom, errcode: int, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wxkf.wecom")
    fake.script(SEND, wecom_error(errcode, text), wecom_error(errcode, text))

    response = await client.send_text(KFID, USER, "你好", msgid="same-msgid")

    assert response.msgid == "MSG_ID_generated"
    sends = fake.calls_to(SEND)
    assert len(sends) == 3
    assert {call.json["msgid"] for call in sends} == {"same-msgid"}  # a retry resends the same message id
    lines = [r.getMessage() for r in caplog.records]
    assert [f"errcode={errcode} attempt={n}" in line for n, line in zip((1, 2), lines, strict=True)] == [
        True,
        True,
    ]


async def test_retries_stop_after_the_attempt_budget(fake: FakeWeCom) -> None:
    fake.script(SEND, *[wecom_error(45009, "api freq out of limit")] * 10)
    async with make_client(fake, RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)) as wecom:
        with pytest.raises(RateLimitedError) as caught:
            await wecom.send_text(KFID, USER, "你好")
    assert (caught.value.errcode, caught.value.api) == (45009, "kf/send_msg")
    assert len(fake.calls_to(SEND)) == 3
    assert_clean(caught.value, fake)


async def test_retries_stop_at_the_deadline(fake: FakeWeCom) -> None:
    # Each answer takes ≥ 0.15 s, so a 0.4 s deadline leaves room for at most three attempts of fifty.
    fake.script(SEND, *[Reply(wecom_error(-1, "system busy"), delay=0.15)] * 50)
    async with make_client(
        fake, RetryPolicy(attempts=50, base_delay=0.001, max_delay=0.001, deadline=0.4)
    ) as wecom:
        with pytest.raises(WeComError) as caught:
            await wecom.send_text(KFID, USER, "你好")
    assert isinstance(caught.value, RateLimitedError | TransportError)
    assert 1 <= len(fake.calls_to(SEND)) <= 3


async def test_a_timeout_is_retried(fake: FakeWeCom) -> None:
    fake.script(STATE, Reply(wecom_error(0, "ok") | {"service_state": 1}, delay=0.5))
    async with make_client(fake, RetryPolicy(base_delay=0.001), timeout=0.1) as wecom:
        await wecom.list_accounts()  # the token first, so only service_state/get meets the slow answer
        state = await wecom.get_service_state(KFID, USER)
    assert state == (3, "zhangsan")  # the fake's default answer, from the second attempt
    assert len(fake.calls_to(STATE)) == 2


async def test_timeouts_until_the_budget_is_spent_raise_transport_error(fake: FakeWeCom) -> None:
    fake.script(STATE, *[Reply(wecom_error(0, "ok"), delay=0.3)] * 3)
    async with make_client(fake, RetryPolicy(attempts=2, base_delay=0.001), timeout=0.05) as wecom:
        await wecom.list_accounts()
        with pytest.raises(TransportError, match="timed out") as caught:
            await wecom.get_service_state(KFID, USER)
    assert (caught.value.api, len(fake.calls_to(STATE))) == ("kf/service_state/get", 2)
    assert_clean(caught.value, fake)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(wecom_error(0, "ok") | {"msgid": "late"}, delay=0.5),  # a timeout while WeCom answers
        Reply(b"<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html"),
    ],
    ids=["timeout", "502"],
)
async def test_a_send_that_may_have_reached_wecom_is_not_sent_again(fake: FakeWeCom, reply: Reply) -> None:
    """A second send_msg could deliver twice; the outbox retries it with the same msgid instead."""
    fake.script(SEND, reply)
    async with make_client(fake, RetryPolicy(base_delay=0.001), timeout=0.1) as wecom:
        await wecom.list_accounts()
        with pytest.raises(TransportError, match="not retried") as caught:
            await wecom.send_text(KFID, USER, "你好", msgid="m1")
    assert len(fake.calls_to(SEND)) == 1
    assert "可能已送达" in str(caught.value)
    assert_clean(caught.value, fake)


async def test_a_send_refused_by_rate_limit_is_still_retried(client: WeComClient, fake: FakeWeCom) -> None:
    fake.script(SEND, wecom_error(45009, "api freq out of limit"))
    response = await client.send_text(KFID, USER, "你好")
    assert response.msgid == "MSG_ID_generated"
    assert len(fake.calls_to(SEND)) == 2


async def test_5xx_and_html_pages_are_retried(client: WeComClient, fake: FakeWeCom) -> None:
    fake.script(
        STATE,
        Reply(b"<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html"),
        Reply(
            b"<html><body>\xe7\xb3\xbb\xe7\xbb\x9f\xe7\xbb\xb4\xe6\x8a\xa4</body></html>",
            content_type="text/html",
        ),
    )
    state = await client.get_service_state(KFID, USER)
    assert state == (3, "zhangsan")
    assert len(fake.calls_to(STATE)) == 3


async def test_an_html_page_that_persists_is_a_malformed_response(fake: FakeWeCom) -> None:
    page = b"<html><head><title>Proxy login</title></head><body>" + b"x" * 1000 + b"</body></html>"
    fake.script(STATE, *[Reply(page, content_type="text/html")] * 2)
    async with make_client(fake, RetryPolicy(attempts=2, base_delay=0.001)) as wecom:
        with pytest.raises(MalformedResponseError) as caught:
            await wecom.get_service_state(KFID, USER)
    error = caught.value
    assert error.api == "kf/service_state/get"
    assert error.excerpt.startswith("<html><head><title>Proxy login")
    assert len(error.excerpt) <= 200
    assert "not WeCom JSON" in str(error)
    assert_clean(error, fake)


async def test_missing_fields_are_malformed_and_not_retried(client: WeComClient, fake: FakeWeCom) -> None:
    fake.script("/cgi-bin/kf/sync_msg", {"errcode": 0, "errmsg": "ok", "msg_list": [{"msgid": "m1"}]})
    with pytest.raises(MalformedResponseError) as caught:
        await client.sync_msg(KFID)
    assert caught.value.retryable is False
    assert "msg_list.0.send_time" in str(caught.value)
    assert len(fake.calls_to("/cgi-bin/kf/sync_msg")) == 1


async def test_a_malformed_gettoken_answer_does_not_leak_the_token(
    client: WeComClient, fake: FakeWeCom
) -> None:
    leaked = "LEAKED-ACCESS-TOKEN-abcdef0123456789"
    fake.script("/cgi-bin/gettoken", {"errcode": 0, "errmsg": "ok", "access_token": leaked})
    with pytest.raises(MalformedResponseError) as caught:
        await client.list_accounts()
    assert caught.value.api == "gettoken"
    assert "expires_in" in str(caught.value)
    assert leaked not in str(caught.value)
    assert_clean(caught.value, fake)


async def test_errmsg_echoing_a_token_is_redacted(client: WeComClient, fake: FakeWeCom) -> None:
    await client.list_accounts()
    token = fake.issued[0]
    fake.script(SEND, wecom_error(40058, f"invalid param access_token={token}&corpsecret={SECRET}"))
    with pytest.raises(WeComError) as caught:
        await client.send_text(KFID, USER, "你好")
    assert "access_token=***&corpsecret=***" in str(caught.value)
    assert_clean(caught.value, fake)


async def test_non_retryable_errors_are_raised_at_once(client: WeComClient, fake: FakeWeCom) -> None:
    fake.script(SEND, wecom_error(95018, "send msg session status invalid"))
    with pytest.raises(SessionStateError):
        await client.send_text(KFID, USER, "你好")
    assert len(fake.calls_to(SEND)) == 1


async def test_unreachable_wecom_is_a_transport_error_after_the_budget() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with WeComClient(
        f"http://127.0.0.1:{port}",
        CORP_ID,
        SECRET,
        token_store=MemoryTokenStore(),
        retry=RetryPolicy(attempts=2, base_delay=0.001),
    ) as wecom:
        with pytest.raises(TransportError) as caught:
            await wecom.send_text(KFID, USER, "你好")
    assert caught.value.api == "gettoken"
    assert "request failed" in str(caught.value)
    assert SECRET not in f"{caught.value} {caught.value.__cause__!r}"
