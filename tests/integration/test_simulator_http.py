"""The simulator over real HTTP with raw httpx: WeCom shapes, callbacks, faults, control API."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from wxkf.simulator.testing import SimulatorControlError, SimulatorHandle, run_simulator


class Receiver:
    """A callback receiver: answers the queued statuses (then 200) and keeps every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(parse_qsl(urlsplit(self.path).query)), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/wecom/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def sim(receiver: Receiver) -> Iterator[SimulatorHandle]:
    with run_simulator(callback_url=receiver.url) as handle:
        yield handle


@pytest.fixture
def http(sim: SimulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url) as client:
        yield client


def token(http: httpx.Client, sim: SimulatorHandle, secret: str | None = None) -> str:
    data = http.get(
        "/cgi-bin/gettoken", params={"corpid": sim.corp_id, "corpsecret": secret or sim.kf_secret}
    )
    return str(data.json()["access_token"])


def post(http: httpx.Client, api: str, tok: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(f"/cgi-bin/{api}", params={"access_token": tok}, json=body)
    assert response.status_code == 200  # wecom-api §7.3: errors too are HTTP 200
    return dict(response.json())


def test_errors_are_http_200_with_wecom_errmsg(http: httpx.Client, sim: SimulatorHandle) -> None:
    """wecom-api §7.3: HTTP 200, `<text>, hint: [...], from ip: ..., more info at ...?e=<code>`."""
    data = post(http, "kf/send_msg", "nope", {})
    assert data["errcode"] == 40014
    assert data["errmsg"].startswith("invalid access_token, hint: [")
    assert (
        "from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e=40014"
        in data["errmsg"]
    )
    wrong_method = http.get("/cgi-bin/kf/send_msg", params={"access_token": token(http, sim)}).json()
    assert wrong_method["errcode"] == 40058  # §7.2: POST用成GET


def test_customer_message_posts_a_verifiable_encrypted_callback(
    http: httpx.Client, sim: SimulatorHandle, receiver: Receiver
) -> None:
    """wecom-api §1.5/§2: signed envelope; plaintext kf_msg_or_event with Token and OpenKfId; §3 sync."""
    sim.control.send_text(sim.customers[0], "你好")
    assert sim.control.wait_callbacks()
    query, body = receiver.requests[0]
    event = sim.crypto().decrypt_callback(query["msg_signature"], query["timestamp"], query["nonce"], body)
    assert event["Event"] == "kf_msg_or_event"
    assert event["OpenKfId"] == sim.open_kfid
    assert event["ToUserName"] == sim.corp_id
    page = post(http, "kf/sync_msg", token(http, sim), {"open_kfid": sim.open_kfid, "token": event["Token"]})
    assert page["msg_list"][0]["text"] == {"content": "你好"}
    assert sim.control.callbacks()[0]["status"] == 200


def test_callbacks_are_retried_three_times_and_recorded(sim: SimulatorHandle, receiver: Receiver) -> None:
    """wecom-api §1.7: no 200 → retry, "总共重试三次"; each attempt recorded with status and latency."""
    receiver.statuses = [500, 500, 500, 500]
    sim.control.send_text(sim.customers[0], "你好")
    assert sim.control.wait_callbacks()
    attempts = sim.control.callbacks()
    assert [a["status"] for a in attempts] == [500, 500, 500, 500]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert all(a["latency_ms"] > 0 for a in attempts)
    receiver.statuses = [503]
    sim.control.send_text(sim.customers[0], "再问一次")
    assert sim.control.wait_callbacks()
    assert [a["status"] for a in sim.control.callbacks()[4:]] == [503, 200]


def test_unreachable_callback_url_is_recorded_as_connection_error(sim: SimulatorHandle) -> None:
    """wecom-api §1.7: connection failures are retried like timeouts."""
    sim.control.set_behaviour(callback_retries=1)
    sim.control.set_callback_url("http://127.0.0.1:9/unreachable")
    sim.control.send_text(sim.customers[0], "你好")
    assert sim.control.wait_callbacks()
    attempts = sim.control.callbacks()
    assert len(attempts) == 2
    assert attempts[0]["status"] is None
    assert attempts[0]["error"] == "ConnectError"


def test_injected_faults_by_api_and_dropped_callbacks(
    http: httpx.Client, sim: SimulatorHandle, receiver: Receiver
) -> None:
    """Faults WeCom cannot be asked for: 45009 on one API (times=1), dropped callbacks."""
    tok = token(http, sim)
    sim.control.add_fault("kf/sync_msg", errcode=45009, times=1)
    assert post(http, "kf/sync_msg", tok, {"open_kfid": sim.open_kfid})["errcode"] == 45009
    assert post(http, "kf/sync_msg", tok, {"open_kfid": sim.open_kfid})["errcode"] == 0
    assert sim.control.faults() == []
    sim.control.add_fault("callback", drop=True)
    sim.control.send_text(sim.customers[0], "你好")
    assert sim.control.wait_callbacks()
    assert receiver.requests == []
    assert sim.control.callbacks()[0]["error"].startswith("dropped")
    calls = sim.control.calls("kf/sync_msg")
    assert [c["errcode"] for c in calls] == [45009, 0]
    assert calls[0]["fault"] is not None


def test_calls_never_record_secrets(http: httpx.Client, sim: SimulatorHandle) -> None:
    """The call log is for reading; access_token and corpsecret are kept out of it."""
    tok = token(http, sim)
    post(http, "kf/service_state/get", tok, {"open_kfid": sim.open_kfid, "external_userid": sim.customers[0]})
    text = str(sim.control.calls())
    assert tok not in text
    assert sim.kf_secret not in text


def test_token_invalidation_through_the_control_api(http: httpx.Client, sim: SimulatorHandle) -> None:
    """wecom-api §7.4: an early-invalidated token answers 42001; gettoken then gives a new one."""
    tok = token(http, sim)
    assert sim.control.invalidate_tokens() == 1
    body = {"open_kfid": sim.open_kfid, "external_userid": sim.customers[0]}
    assert post(http, "kf/service_state/get", tok, body)["errcode"] == 42001
    assert post(http, "kf/service_state/get", token(http, sim), body)["errcode"] == 0


def test_media_upload_and_get(http: httpx.Client, sim: SimulatorHandle) -> None:
    """wecom-api §8: multipart field `media`; created_at is a string; > 5 bytes; 40007 for unknown ids."""
    tok = token(http, sim)
    files = {"media": ("a.png", b"\x89PNG-image-bytes", "image/png")}
    up = http.post("/cgi-bin/media/upload", params={"access_token": tok, "type": "image"}, files=files).json()
    assert up["errcode"] == 0
    assert isinstance(up["created_at"], str)
    got = http.get("/cgi-bin/media/get", params={"access_token": tok, "media_id": up["media_id"]})
    assert got.content == b"\x89PNG-image-bytes"
    assert got.headers["content-type"] == "image/png"
    tiny = {"media": ("a.png", b"abc", "image/png")}
    assert (
        http.post("/cgi-bin/media/upload", params={"access_token": tok, "type": "image"}, files=tiny).json()[
            "errcode"
        ]
        == 40006
    )
    missing = http.get("/cgi-bin/media/get", params={"access_token": tok, "media_id": "nope"}).json()
    assert missing["errcode"] == 40007


def test_contact_and_app_message_endpoints(http: httpx.Client, sim: SimulatorHandle) -> None:
    """wecom-api §9 over HTTP: the contact secret's token; add_msg_template → confirm → send result."""
    tok = token(http, sim, sim.contact_secret)
    listed = http.get(
        "/cgi-bin/externalcontact/list", params={"access_token": tok, "userid": sim.member}
    ).json()
    assert listed["external_userid"] == sim.external_contacts
    created = post(
        http, "externalcontact/add_msg_template", tok, {"sender": sim.member, "text": {"content": "上新"}}
    )
    assert sim.control.confirm_group_msg(created["msgid"], sim.member) == {
        "sent": 2,
        "not_friend": 0,
        "over_cap": 0,
    }
    result = post(
        http,
        "externalcontact/get_groupmsg_send_result",
        tok,
        {"msgid": created["msgid"], "userid": sim.member},
    )
    assert {r["status"] for r in result["send_list"]} == {1}
    assert sim.control.received(sim.external_contacts[0])[0]["text"] == {"content": "上新"}
    kf_token = token(http, sim)
    assert post(http, "externalcontact/add_msg_template", kf_token, {})["errcode"] == 48002
    agent_token = token(http, sim, sim.agent_secret)
    body = {
        "touser": "zhangsan|ghost",
        "msgtype": "text",
        "agentid": sim.agent_id,
        "text": {"content": "有新客户"},
    }
    sent = post(http, "message/send", agent_token, body)
    assert sent["invaliduser"] == "ghost"
    assert sim.control.app_messages("zhangsan")[0]["text"] == {"content": "有新客户"}


def test_control_api_refusals_carry_the_errcode(sim: SimulatorHandle) -> None:
    """A servicer who is not on the account cannot take a session (wecom-api §6: 95014)."""
    with pytest.raises(SimulatorControlError) as info:
        sim.control.take(sim.customers[0], "wangwu")
    assert info.value.errcode == 95014
    assert info.value.status == 400


def test_reset_clears_traffic_faults_and_logs(sim: SimulatorHandle) -> None:
    sim.control.add_fault("*", errcode=-1)
    sim.control.send_text(sim.customers[0], "你好")
    sim.control.advance(60)
    sim.control.reset()
    assert sim.control.faults() == []
    assert sim.control.calls() == []
    assert sim.control.session(sim.customers[0])["service_state"] == 4


def test_every_fault_on_an_api_applies_not_only_the_first(http: httpx.Client, sim: SimulatorHandle) -> None:
    """A slow send_msg and a throttled send_msg at once: the delay no longer hides the 45009."""
    import time

    tok = token(http, sim)
    sim.control.add_fault("kf/sync_msg", delay_ms=300)
    sim.control.add_fault("*", errcode=45009, times=1)
    started = time.monotonic()
    assert post(http, "kf/sync_msg", tok, {"open_kfid": sim.open_kfid})["errcode"] == 45009
    assert time.monotonic() - started >= 0.3
    [call] = sim.control.calls("kf/sync_msg")
    assert len(call["faults"]) == 2


def test_a_token_invalidation_fault_answers_42001_until_a_new_token_is_fetched(
    http: httpx.Client, sim: SimulatorHandle
) -> None:
    """wecom-api §7.4: WeCom may invalidate a token early; the fault does it on one API's call."""
    tok = token(http, sim)
    sim.control.add_fault("kf/send_msg", invalidate_token=True, times=1)
    body = {"open_kfid": sim.open_kfid, "external_userid": sim.customers[0]}
    assert post(http, "kf/sync_msg", tok, {"open_kfid": sim.open_kfid})["errcode"] == 0  # another API
    assert (
        post(http, "kf/send_msg", tok, {**body, "msgtype": "text", "text": {"content": "x"}})["errcode"]
        == 42001
    )
    assert post(http, "kf/service_state/get", tok, body)["errcode"] == 42001  # the token is gone
    assert post(http, "kf/service_state/get", token(http, sim), body)["errcode"] == 0


def test_a_callback_answered_200_can_be_delivered_again(sim: SimulatorHandle, receiver: Receiver) -> None:
    """WeCom does redeliver a callback the receiver acknowledged: the same envelope, twice."""
    sim.control.add_fault("callback", duplicate=True, times=1)
    sim.control.send_text(sim.customers[0], "你好")
    assert sim.control.wait_callbacks()
    assert len(receiver.requests) == 2
    assert receiver.requests[0] == receiver.requests[1]
    assert [(a["status"], a["duplicate"]) for a in sim.control.callbacks()] == [(200, False), (200, True)]


def test_callbacks_are_retried_while_the_receiver_is_down(sim: SimulatorHandle, receiver: Receiver) -> None:
    """An unreachable fault makes attempts fail as if the service were down; WeCom retries with
    backoff, and the callback arrives once the receiver is back."""
    sim.control.set_behaviour(callback_retries=4, callback_retry_delay=0.05, callback_retry_backoff=4.0)
    sim.control.add_fault("callback", unreachable=True, times=3)
    sim.control.send_text(sim.customers[0], "你好")
    assert sim.control.wait_callbacks()
    attempts = sim.control.callbacks()
    assert [a["status"] for a in attempts] == [None, None, None, 200]
    assert attempts[0]["error"].startswith("unreachable")
    gaps = [b["monotonic"] - a["monotonic"] for a, b in itertools.pairwise(attempts)]
    # The waits grow: 0.05, 0.2, 0.8 s, measured on the clock they run on (the world's `at` is the
    # wall clock, which NTP may step or slew against it), less the event loop's timer granularity
    # (uvloop's is 1 ms: 0.19994 s was measured for 0.2).
    assert all(gap >= wait - 0.001 for gap, wait in zip(gaps, [0.05, 0.2, 0.8], strict=True)), gaps
    assert len(receiver.requests) == 1


def test_callbacks_go_to_several_receivers_in_turn_and_a_retry_to_the_next(
    sim: SimulatorHandle, receiver: Receiver
) -> None:
    """Two replicas behind one URL: each attempt goes to the next one, so a dead replica costs a retry."""
    sim.control.set_callback_urls(["http://127.0.0.1:9/dead", receiver.url])
    for i in range(4):
        sim.control.send_text(sim.customers[0], f"第{i}条")
    assert sim.control.wait_callbacks()
    assert len(receiver.requests) == 4
    attempts = sim.control.callbacks()
    assert {a["url"] for a in attempts} == {"http://127.0.0.1:9/dead", receiver.url}
    assert sum(1 for a in attempts if a["status"] == 200) == 4
