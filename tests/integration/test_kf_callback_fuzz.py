"""The callback URL against hostile input (hypothesis): signed and unsigned envelopes, query strings, bodies.

Anyone who can reach `/wecom/callback` can send anything. With the database up, no input may get a
5xx, and an input that is refused may change nothing but its own refusal counter
(`kf.callback.<outcome>`): no event row, no delivery count, no job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wxkf.config import Settings
from wxkf.demo import BackgroundServer
from wxkf.simulator.callbacks import event_xml
from wxkf.simulator.seed import seed_world
from wxkf.simulator.testing import handle_for
from wxkf.web.app import create_app
from wxkf.wecom.crypto import CallbackCrypto, signature

WORLD = seed_world()
SIM = handle_for("http://127.0.0.1:9", WORLD)  # the secrets only: no WeCom call is made here
CRYPTO = CallbackCrypto(SIM.callback_token, SIM.encoding_aes_key, SIM.corp_id)
KFID = SIM.open_kfid


@pytest.fixture(scope="module")
def server(pg_admin_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The real app on a real port (callback route only: no worker), on a database of its own."""
    from tests.conftest import fresh_database

    conninfo = fresh_database(pg_admin_uri)
    settings = Settings(
        _env_file=None,
        **SIM.settings_overrides(),
        database_url=conninfo,
        wxkf_data_dir=tmp_path_factory.mktemp("fuzz") / "var",
        kf_accounts="",
    )
    with BackgroundServer(create_app(settings)) as running:
        yield running.url, conninfo


def _state(conninfo: str) -> tuple[Any, ...]:
    """Everything a callback can write: event rows and deliveries, jobs, and the counters."""
    with psycopg.connect(conninfo) as conn:
        events = conn.execute(
            "SELECT count(*), coalesce(sum(deliveries), 0) FROM kf_callback_events"
        ).fetchone()
        jobs = conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()
        counters: dict[str, int] = dict(conn.execute("SELECT name, value FROM kf_counters").fetchall())
    return events, jobs, counters


text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "0", "1e9", " 1", "１２３", "NaN", "9" * 30, str(2**63), str(2**63 - 1)]),
    text,
)
now_ish = st.integers(min_value=-3600, max_value=3600).map(lambda d: str(int(time.time()) + d))


@st.composite
def signed_envelopes(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """A correctly signed POST whose plaintext fields, timestamp or ciphertext are anything."""
    timestamp = draw(st.one_of(now_ish, numbers))
    nonce = draw(st.one_of(st.integers(0, 10**10).map(str), text.filter(bool)))
    kind = draw(st.sampled_from(["event", "other_event", "raw_plaintext", "raw_ciphertext"]))
    if kind in ("event", "other_event"):
        plain = event_xml(
            draw(st.one_of(st.just(SIM.corp_id), text)),
            draw(st.one_of(st.just(KFID), text)),
            draw(text),
            0,
        ).replace("<CreateTime>0</CreateTime>", f"<CreateTime>{draw(numbers)}</CreateTime>")
        if kind == "other_event":
            plain = plain.replace("kf_msg_or_event", draw(text))
        encrypted = CRYPTO.encrypt(plain)
    elif kind == "raw_plaintext":
        encrypted = CRYPTO.encrypt(draw(st.binary(max_size=300)))
    else:
        encrypted = draw(st.one_of(text, st.binary(max_size=64).map(lambda b: b.hex())))
    envelope = f"<xml><ToUserName><![CDATA[{SIM.corp_id}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    prefix = draw(st.sampled_from(["", '<?xml version="1.0"?>', '<?xml version="1.0" encoding="x-bogus"?>']))
    params = {
        "msg_signature": signature(SIM.callback_token, timestamp, nonce, encrypted),
        "timestamp": timestamp,
        "nonce": nonce,
    }
    return params, (prefix + envelope).encode()


@st.composite
def unsigned_requests(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """Anything at all: query parameters (present or not, any text) and a body of any bytes."""
    params = draw(
        st.dictionaries(
            st.sampled_from(["msg_signature", "timestamp", "nonce", "echostr", "x", "msg_signature "]),
            st.one_of(text, numbers),
            max_size=5,
        )
    )
    body = draw(
        st.one_of(
            st.binary(max_size=2000),
            text.map(str.encode),
            st.just(b"<!DOCTYPE x [<!ENTITY a 'b'>]><xml><Encrypt>&a;</Encrypt></xml>"),
            st.just(b"<xml><Encrypt>" + b"A" * 5000 + b"</Encrypt></xml>"),
        )
    )
    return params, body


requests = st.one_of(signed_envelopes(), unsigned_requests())


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests, method=st.sampled_from(["POST", "POST", "POST", "GET"]))
def test_no_input_gets_a_5xx_and_a_refused_one_changes_nothing(
    server: tuple[str, str], request: tuple[dict[str, str], bytes], method: str
) -> None:
    url, conninfo = server
    params, body = request
    before = _state(conninfo)
    response = httpx.request(method, f"{url}/wecom/callback", params=params, content=body, timeout=30)
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code == 200:
        return  # accepted (a genuine callback, or acknowledged and ignored): it may be recorded
    (events, jobs, counters), (events_before, jobs_before, counters_before) = _state(conninfo), before
    assert (events, jobs) == (events_before, jobs_before)
    changed = {
        k: v - counters_before.get(k, 0) for k, v in counters.items() if v != counters_before.get(k, 0)
    }
    assert len(changed) == 1, changed
    [(name, added)] = changed.items()
    assert name.startswith("kf.callback.")
    assert added == 1
