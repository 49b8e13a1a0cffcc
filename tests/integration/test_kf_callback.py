"""`/wecom/callback` over real HTTP: verification, bad input refused with 4xx and nothing recorded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.kf_harness import RunningPipeline, ScriptedResponder, running_pipeline
from wxkf.db.engine import application_name
from wxkf.kf.callback import WRITER_ROLE, _EventWriter
from wxkf.simulator.callbacks import event_xml
from wxkf.wecom.crypto import CallbackCrypto


@pytest.fixture
async def run(settings_factory: Any) -> AsyncIterator[RunningPipeline]:
    async with running_pipeline(
        settings_factory, ScriptedResponder(), run_worker=False, kf_accounts=""
    ) as run:
        yield run


def _envelope(
    run: RunningPipeline, open_kfid: str = "", token: str = "TOKEN1", create_time: int = 1_800_000_000
) -> tuple[str, dict[str, str]]:
    xml = event_xml(run.sim.corp_id, open_kfid or run.sim.open_kfid, token, create_time)
    return run.sim.crypto().callback_envelope(xml)  # signed now, as WeCom does


async def _recorded(run: RunningPipeline) -> int:
    return int((await run.query("SELECT count(*) FROM kf_callback_events"))[0][0])


async def test_url_verification_answers_the_bare_plaintext(run: RunningPipeline) -> None:
    # wecom-api §1.4: answer the decrypted echostr, nothing else.
    reply = run.sim.crypto().encrypt_reply("1616140317555161061")
    params = {"msg_signature": reply.signature, "timestamp": reply.timestamp, "nonce": reply.nonce}
    async with httpx.AsyncClient(base_url=run.base_url) as http:
        ok = await http.get("/wecom/callback", params={**params, "echostr": reply.encrypt})
        bad = await http.get("/wecom/callback", params={**params, "echostr": reply.encrypt, "nonce": "x"})
    assert (ok.status_code, ok.content) == (200, b"1616140317555161061")
    assert bad.status_code == 403


async def test_a_callback_is_recorded_and_a_sync_deferred(run: RunningPipeline) -> None:
    body, params = _envelope(run)
    async with httpx.AsyncClient(base_url=run.base_url) as http:
        response = await http.post("/wecom/callback", params=params, content=body)
    assert (response.status_code, response.text) == (200, "success")
    assert await run.query("SELECT open_kfid, token, known_account FROM kf_callback_events") == [
        (run.sim.open_kfid, "TOKEN1", True)
    ]
    jobs = await run.query("SELECT task_name, args->>'open_kfid' FROM procrastinate_jobs")
    assert jobs == [("kf:sync_account", run.sim.open_kfid)]


async def test_concurrent_callbacks_and_repeats_are_each_recorded_once(run: RunningPipeline) -> None:
    """A burst arrives while earlier writes are in flight, so callbacks share statements; each
    distinct callback is one row with every delivery counted, and exactly one sync is queued."""
    envelopes = [_envelope(run, token=f"T{i % 10}") for i in range(40)]  # 10 callbacks, each 4 times
    async with httpx.AsyncClient(base_url=run.base_url) as http:
        responses = await asyncio.gather(
            *(http.post("/wecom/callback", params=params, content=body) for body, params in envelopes)
        )
    assert {(r.status_code, r.text) for r in responses} == {(200, "success")}
    rows = await run.query("SELECT token, deliveries FROM kf_callback_events ORDER BY token")
    assert rows == [(f"T{i}", 4) for i in range(10)]
    jobs = await run.query("SELECT task_name FROM procrastinate_jobs")
    assert jobs == [("kf:sync_account",)]


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        ("signature", 403),
        ("corp_id", 403),
        ("xml", 400),
        ("ciphertext", 400),
        ("missing_query", 400),
    ],
)
async def test_bad_callbacks_get_4xx_and_change_nothing(
    run: RunningPipeline, mutate: str, status: int
) -> None:
    body, params = _envelope(run)
    if mutate == "signature":
        params = {**params, "msg_signature": "0" * 40}
    elif mutate == "corp_id":
        other = CallbackCrypto(run.sim.callback_token, run.sim.encoding_aes_key, "wwSomeOtherCorp")
        body, params = other.callback_envelope(event_xml("wwSomeOtherCorp", run.sim.open_kfid, "T", 1), "1")
    elif mutate == "xml":
        body = "<xml><Encrypt>"
    elif mutate == "ciphertext":
        body = "<xml><Encrypt>bm90IGNpcGhlcnRleHQ=</Encrypt></xml>"
        params = {**params, "msg_signature": _sign(run, params, "bm90IGNpcGhlcnRleHQ=")}
    elif mutate == "missing_query":
        params = {}
    async with httpx.AsyncClient(base_url=run.base_url) as http:
        response = await http.post("/wecom/callback", params=params, content=body)
    assert response.status_code == status
    assert await _recorded(run) == 0


def _sign(run: RunningPipeline, params: dict[str, str], encrypted: str) -> str:
    from wxkf.wecom.crypto import signature

    return signature(run.sim.callback_token, params["timestamp"], params["nonce"], encrypted)


async def test_an_oversized_body_is_refused_before_it_is_read(run: RunningPipeline) -> None:
    _, params = _envelope(run)
    async with httpx.AsyncClient(base_url=run.base_url) as http:
        declared = await http.post("/wecom/callback", params=params, content=b"x" * (1024 * 1024 + 1))

        async def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
            for _ in range(40):
                yield b"x" * 65536

        streamed = await http.post("/wecom/callback", params=params, content=chunks())
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert await _recorded(run) == 0


async def test_a_callback_for_an_unknown_account_is_recorded_but_not_synced(settings_factory: Any) -> None:
    async with running_pipeline(
        settings_factory, ScriptedResponder(), run_worker=False, kf_accounts="wkOnlyThisOne"
    ) as run:
        body, params = _envelope(run)
        async with httpx.AsyncClient(base_url=run.base_url) as http:
            response = await http.post("/wecom/callback", params=params, content=body)
        assert response.status_code == 200
        assert await run.query("SELECT known_account FROM kf_callback_events") == [(False,)]
        assert await run.query("SELECT count(*) FROM procrastinate_jobs") == [(0,)]


async def test_the_event_writer_reconnects_when_its_connection_was_dropped(run: RunningPipeline) -> None:
    """A database restart or a dropped idle connection costs no callback: the batch is written again."""
    async with httpx.AsyncClient(base_url=run.base_url) as http:
        body, params = _envelope(run, token="BEFORE")
        assert (await http.post("/wecom/callback", params=params, content=body)).status_code == 200
        terminated = await run.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            application_name(WRITER_ROLE),  # the writer of this test's own process
        )
        assert terminated == [(True,)]
        body, params = _envelope(run, token="AFTER")
        response = await http.post("/wecom/callback", params=params, content=body)
    assert (response.status_code, response.text) == (200, "success")
    assert sorted(await run.query("SELECT token FROM kf_callback_events")) == [("AFTER",), ("BEFORE",)]


async def test_the_event_writer_refuses_writes_once_closed(database_url: str) -> None:
    writer = _EventWriter(database_url)
    assert await writer.write(("wkCLOSE", "T1", 1), True) == (True, False)
    await writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        await writer.write(("wkCLOSE", "T2", 1), True)


async def test_an_envelope_in_an_unknown_xml_encoding_is_refused_with_400(run: RunningPipeline) -> None:
    """Unauthenticated: anyone who can reach the URL could send it (issue 12, defect 4)."""
    body, params = _envelope(run)
    bogus = '<?xml version="1.0" encoding="x-bogus"?>' + body
    async with httpx.AsyncClient(base_url=run.base_url) as http:
        response = await http.post("/wecom/callback", params=params, content=bogus.encode())
    assert response.status_code == 400
    assert "Traceback" not in response.text
    assert await _recorded(run) == 0


async def test_a_create_time_out_of_range_is_refused_alone_not_with_its_batch(run: RunningPipeline) -> None:
    """A signed callback with CreateTime ≥ 2^63 failed the batched write of every callback beside it."""
    bad = _envelope(run, token="BAD", create_time=2**63)
    good = [_envelope(run, token=f"OK{i}") for i in range(30)]
    async with httpx.AsyncClient(base_url=run.base_url) as http:
        responses = await asyncio.gather(
            *(http.post("/wecom/callback", params=params, content=body) for body, params in [bad, *good])
        )
    assert responses[0].status_code == 400
    assert [r.status_code for r in responses[1:]] == [200] * len(good)
    assert sorted(t for (t,) in await run.query("SELECT token FROM kf_callback_events")) == sorted(
        f"OK{i}" for i in range(30)
    )


async def test_one_row_the_database_refuses_fails_alone(database_url: str) -> None:
    """Whatever slips past the route's checks, a failing row cannot take its batch down."""
    writer = _EventWriter(database_url)
    try:
        results = await asyncio.gather(
            writer.write(("wkISO", "BAD", 2**63), True),
            *(writer.write(("wkISO", f"T{i}", i), True) for i in range(5)),
            return_exceptions=True,
        )
    finally:
        await writer.close()
    assert isinstance(results[0], Exception)
    assert results[1:] == [(True, False)] * 5


@pytest.mark.parametrize(
    "timestamp",
    ["abc", "1000000000", "-5", "1" * 30, "", "1e9", " 1800000000", "１２３"],
)
async def test_a_malformed_or_implausible_timestamp_is_refused(run: RunningPipeline, timestamp: str) -> None:
    body, params = _envelope(run)
    params = {**params, "timestamp": timestamp}
    params["msg_signature"] = _sign(run, params, _encrypted(body))  # signed: only the time is wrong
    async with httpx.AsyncClient(base_url=run.base_url) as http:
        response = await http.post("/wecom/callback", params=params, content=body)
    assert response.status_code == 400
    assert await _recorded(run) == 0


async def test_a_signed_callback_older_than_the_replay_window_is_refused(run: RunningPipeline) -> None:
    """A captured callback replayed later: signed, but from outside CALLBACK_MAX_SKEW of now."""
    from wxkf.kf.callback import CALLBACK_MAX_SKEW_SECONDS

    xml = event_xml(run.sim.corp_id, run.sim.open_kfid, "OLD", 1_800_000_000)
    async with httpx.AsyncClient(base_url=run.base_url) as http:
        for offset, status in [(-CALLBACK_MAX_SKEW_SECONDS - 60, 400), (CALLBACK_MAX_SKEW_SECONDS + 60, 400)]:
            body, params = run.sim.crypto().callback_envelope(xml, timestamp=str(int(time.time()) + offset))
            assert (await http.post("/wecom/callback", params=params, content=body)).status_code == status
        body, params = run.sim.crypto().callback_envelope(xml, timestamp=str(int(time.time()) - 30))
        assert (await http.post("/wecom/callback", params=params, content=body)).status_code == 200
    assert await run.query("SELECT token FROM kf_callback_events") == [("OLD",)]
    stale = await run.query("SELECT value FROM kf_counters WHERE name = 'kf.callback.stale'")
    assert stale == [(2,)]


def _encrypted(body: str) -> str:
    from wxkf.wecom.crypto import parse_xml

    return parse_xml(body)["Encrypt"]


async def test_a_body_sent_a_byte_at_a_time_is_cut_off(
    run: RunningPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow clients were held until they finished (150 at 1 byte/s: 40 s each); now the body has a
    deadline, and callbacks sent meanwhile are answered as usual."""
    from wxkf.kf import callback

    monkeypatch.setattr(callback, "BODY_READ_TIMEOUT", 0.5)
    body, params = _envelope(run)
    query = "&".join(f"{k}={v}" for k, v in params.items())
    host, port = run.base_url.removeprefix("http://").split(":")

    async def trickle() -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection(host, int(port))
        started = time.monotonic()
        writer.write(
            f"POST /wecom/callback?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        answer = b""
        for byte in body.encode():
            writer.write(bytes([byte]))
            try:
                answer = await asyncio.wait_for(reader.read(200), 0.2)
                break
            except TimeoutError:
                continue
        writer.close()
        return time.monotonic() - started, answer

    async with httpx.AsyncClient(base_url=run.base_url) as http:
        slow = asyncio.gather(*(trickle() for _ in range(20)))
        fast = await http.post("/wecom/callback", params=params, content=body)
        answers = await slow
    assert fast.status_code == 200
    assert {answer.split(b"\r\n")[0] for _, answer in answers} == {b"HTTP/1.1 408 Request Timeout"}
    assert max(seconds for seconds, _ in answers) < 3
    assert await run.query("SELECT value FROM kf_counters WHERE name = 'kf.callback.slow'") == [(20,)]
