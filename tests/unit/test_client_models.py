"""Pure parts of the client: redaction, backoff bounds, model parsing, token bookkeeping."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta

import pytest

from wxkf.wecom.client import RetryPolicy, redact
from wxkf.wecom.errors import InvalidArgumentError
from wxkf.wecom.models import KfMessage, SendMsgOnEventRequest, Text
from wxkf.wecom.tokens import CachedToken, TokenKey, usable


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "GET /cgi-bin/gettoken?corpid=ww1&corpsecret=abc-DEF_1 HTTP/1.1",
            "GET /cgi-bin/gettoken?corpid=ww1&corpsecret=*** HTTP/1.1",
        ),
        ("POST /cgi-bin/kf/send_msg?access_token=T0k3n", "POST /cgi-bin/kf/send_msg?access_token=***"),
        ('{"access_token": "T0k3n", "expires_in": 7200}', '{"access_token": "***", "expires_in": 7200}'),
        ("{'access_token': 'T0k3n'}", "{'access_token': '***'}"),
        ("ACCESS_TOKEN=x&open_kfid=wk1", "ACCESS_TOKEN=***&open_kfid=wk1"),
    ],
)
def test_redact_masks_token_and_secret_parameters(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_masks_given_values_anywhere() -> None:
    assert (
        redact("body echoed SECRETVALUE and TOKENVALUE", "SECRETVALUE", "TOKENVALUE", "")
        == "body echoed *** and ***"
    )


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    random.seed(7)
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=8.0)
    for retry, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        samples = [policy.backoff(retry) for _ in range(500)]
        assert all(0.0 <= delay <= cap for delay in samples)
        assert max(samples) > cap * 0.9  # the whole range is used, so the cap is the cap
        assert min(samples) < cap * 0.1


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"base_delay": -1.0}, {"max_delay": -0.5}, {"deadline": 0.0}]
)
def test_retry_policy_refuses_unbounded_or_nonsense_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_kf_message_keeps_the_body_of_any_msgtype() -> None:
    message = KfMessage.model_validate(
        {
            "msgid": "m1",
            "open_kfid": "wk1",
            "external_userid": "wm1",
            "send_time": 1,
            "origin": 3,
            "msgtype": "channels_shop_product",
            "channels_shop_product": {"product_id": "p1", "sales_price": "100"},
        }
    )
    assert message.body == {"product_id": "p1", "sales_price": "100"}
    assert message.event is None


def test_kf_message_without_a_body_has_an_empty_one() -> None:
    message = KfMessage.model_validate({"msgid": "m1", "send_time": 1, "origin": 3, "msgtype": "note"})
    assert message.body == {}


def test_send_msg_on_event_allows_only_its_own_body() -> None:
    request = SendMsgOnEventRequest(code="C", msgtype="msgmenu", text=Text(content="x"))
    with pytest.raises(InvalidArgumentError, match="msgmenu"):
        request.check("kf/send_msg_on_event")


def test_cached_token_hides_the_token_and_knows_its_margin() -> None:
    now = datetime.now(UTC)
    token = CachedToken("SECRET-TOKEN", now + timedelta(minutes=6))
    assert "SECRET-TOKEN" not in repr(token)
    assert token.fresh(now)
    assert not token.fresh(now + timedelta(minutes=1, seconds=1))  # inside the 5-minute margin
    assert usable(token, None)
    assert not usable(token, "SECRET-TOKEN")
    assert not usable(None, None)


def test_token_key_stores_a_digest_not_the_secret() -> None:
    key = TokenKey.for_secret("ww1", "the-secret")
    assert key == TokenKey("ww1", hashlib.sha256(b"the-secret").hexdigest())
    assert "the-secret" not in repr(key)
