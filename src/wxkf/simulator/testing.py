"""Run the simulator in-process for tests and demos.

    from wxkf.simulator.testing import run_simulator

    with run_simulator(callback_url="http://127.0.0.1:8000/wecom/callback") as sim:
        settings = Settings(**sim.settings_overrides(), database_url=...)
        customer = sim.customers[0]
        sim.control.send_text(customer, "你好")       # the customer writes → encrypted callback
        sim.control.wait_callbacks()                   # every delivery attempt finished
        sim.control.received(customer)                 # what the customer got, in order

`run_simulator` serves a seeded world with uvicorn on 127.0.0.1 (a free port) in a background thread
with its own event loop, so it works the same under `with` in sync tests and `async with` in async
ones. The control client is synchronous and quick (in-memory operations); in an async test whose
callback receiver runs on the test's own loop, call blocking waits through `asyncio.to_thread`, e.g.
`await asyncio.to_thread(sim.control.wait_callbacks)`.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from wxkf.simulator.app import create_simulator_app
from wxkf.simulator.behaviour import Behaviour
from wxkf.simulator.seed import AGENT_APP, CONTACT_APP, KF_APP, seed_world
from wxkf.simulator.world import World
from wxkf.wecom.crypto import CallbackCrypto


class SimulatorControlError(Exception):
    """The control API refused a request; `errcode` is the WeCom rule that refused it."""

    def __init__(self, status: int, errcode: int, errmsg: str) -> None:
        super().__init__(f"HTTP {status} errcode={errcode} {errmsg}")
        self.status = status
        self.errcode = errcode
        self.errmsg = errmsg


class SimulatorControl:
    """A typed client of the `/sim/...` control API (docs/simulator.md lists the routes)."""

    def __init__(self, base_url: str, default_open_kfid: str = "") -> None:
        self.base_url = base_url
        self.open_kfid = default_open_kfid
        self._http = httpx.Client(base_url=base_url, timeout=130)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=body, params=params)
        if response.status_code != 200:
            try:
                data = response.json()
                errcode, errmsg = int(data.get("errcode", 0)), str(data.get("errmsg", data))
            except ValueError:
                errcode, errmsg = 0, response.text
            raise SimulatorControlError(response.status_code, errcode, errmsg)
        return response.json()

    def _kfid(self, open_kfid: str | None) -> str:
        return open_kfid or self.open_kfid

    # world
    def world(self) -> dict[str, Any]:
        return dict(self._call("GET", "/sim/world"))

    def reset(self) -> None:
        self._call("POST", "/sim/reset")

    def behaviour(self) -> dict[str, Any]:
        return dict(self._call("GET", "/sim/behaviour"))

    def set_behaviour(self, **patch: Any) -> dict[str, Any]:
        """E.g. `set_behaviour(window_errcode=95002, msg_send_fail_rate=1.0, empty_page_rate=0.5)`."""
        return dict(self._call("PATCH", "/sim/behaviour", patch))

    def set_callback_url(self, url: str | None) -> None:
        self._call("PUT", "/sim/callback_url", {"url": url})

    def save_callback_url(self, url: str | None) -> None:
        """Save the URL as in the admin console: the signed GET verification must pass first (§1.4)."""
        self._call("POST", "/sim/console/callback", {"url": url})

    def set_callback_urls(self, urls: list[str]) -> None:
        """Several receivers (replicas behind a load balancer): each delivery attempt goes to the next."""
        self._call("PUT", "/sim/callback_url", {"urls": urls})

    # customers
    def add_customer(self, nickname: str = "客户", external_userid: str | None = None) -> str:
        data = self._call(
            "POST", "/sim/customers", {"nickname": nickname, "external_userid": external_userid}
        )
        return str(data["external_userid"])

    def enter(
        self, external_userid: str, *, open_kfid: str | None = None, scene: str = "", scene_param: str = ""
    ) -> dict[str, Any]:
        """The customer opens the chat: returns the enter_session event (with welcome_code if due)."""
        body = {"open_kfid": self._kfid(open_kfid), "scene": scene, "scene_param": scene_param}
        return dict(self._call("POST", f"/sim/customers/{external_userid}/enter", body))

    def send_text(
        self, external_userid: str, content: str, *, open_kfid: str | None = None
    ) -> dict[str, Any]:
        """The customer writes text: returns the sync_msg item (msgid, send_time, …)."""
        return self.send(external_userid, "text", {"content": content}, open_kfid=open_kfid)

    def send(
        self,
        external_userid: str,
        msgtype: str,
        body: dict[str, Any],
        *,
        open_kfid: str | None = None,
        future: bool = False,
    ) -> dict[str, Any]:
        """The customer sends any msgtype with its wecom-api §3 body (`future`: one WeCom lacks yet)."""
        payload = {"open_kfid": self._kfid(open_kfid), "msgtype": msgtype, "body": body, "future": future}
        return dict(self._call("POST", f"/sim/customers/{external_userid}/messages", payload))

    def upload_media(
        self, kind: str, data: bytes, filename: str, content_type: str = "application/octet-stream"
    ) -> str:
        """Make `data` a customer's media_id (3 days, served by media/get)."""
        body = {
            "type": kind,
            "filename": filename,
            "content_type": content_type,
            "data_base64": base64.b64encode(data).decode(),
        }
        return str(self._call("POST", "/sim/media", body)["media_id"])

    def send_media(
        self,
        external_userid: str,
        kind: str,
        data: bytes,
        filename: str,
        content_type: str = "application/octet-stream",
        *,
        open_kfid: str | None = None,
    ) -> dict[str, Any]:
        """The customer sends an image / voice / video / file with these bytes."""
        media_id = self.upload_media(kind, data, filename, content_type)
        return self.send(external_userid, kind, {"media_id": media_id}, open_kfid=open_kfid)

    def menu_click(
        self, external_userid: str, menu_id: str, *, open_kfid: str | None = None
    ) -> dict[str, Any]:
        """The customer taps the click item `menu_id` of a menu they received."""
        body = {"open_kfid": self._kfid(open_kfid), "menu_id": menu_id}
        return dict(self._call("POST", f"/sim/customers/{external_userid}/menu_click", body))

    def add_account(self, name: str, servicers: list[str] | None = None) -> str:
        """A new kf account; returns its open_kfid."""
        data = self._call("POST", "/sim/accounts", {"name": name, "servicers": servicers or []})
        return str(data["open_kfid"])

    def set_upgrade_config(self, members: list[str], groupchats: list[str]) -> None:
        self._call("PUT", "/sim/upgrade_config", {"members": members, "groupchats": groupchats})

    def recall(self, external_userid: str, msgid: str, *, open_kfid: str | None = None) -> dict[str, Any]:
        body = {"open_kfid": self._kfid(open_kfid), "msgid": msgid}
        return dict(self._call("POST", f"/sim/customers/{external_userid}/recall", body))

    def received(self, external_userid: str, *, open_kfid: str | None = None) -> list[dict[str, Any]]:
        """Everything the customer received (API, welcome/end codes, servicers, group messages), in order."""
        params = {"open_kfid": open_kfid} if open_kfid else None
        return list(self._call("GET", f"/sim/customers/{external_userid}/received", params=params))

    # sessions and servicers
    def session(self, external_userid: str, *, open_kfid: str | None = None) -> dict[str, Any]:
        params = {"open_kfid": self._kfid(open_kfid), "external_userid": external_userid}
        return dict(self._call("GET", "/sim/sessions", params=params))

    def set_state(
        self, external_userid: str, state: int, servicer_userid: str = "", *, open_kfid: str | None = None
    ) -> dict[str, Any]:
        body = {
            "open_kfid": self._kfid(open_kfid),
            "external_userid": external_userid,
            "service_state": state,
            "servicer_userid": servicer_userid,
        }
        return dict(self._call("PUT", "/sim/sessions/state", body))

    def take(
        self, external_userid: str, servicer_userid: str, *, open_kfid: str | None = None
    ) -> dict[str, Any]:
        return self._servicer("take", external_userid, servicer_userid, open_kfid)

    def transfer(
        self, external_userid: str, servicer_userid: str, *, open_kfid: str | None = None
    ) -> dict[str, Any]:
        return self._servicer("transfer", external_userid, servicer_userid, open_kfid)

    def end(self, external_userid: str, *, open_kfid: str | None = None) -> dict[str, Any]:
        body = {"open_kfid": self._kfid(open_kfid), "external_userid": external_userid}
        return dict(self._call("POST", "/sim/sessions/end", body))

    def servicer_reply(
        self, external_userid: str, servicer_userid: str, content: str, *, open_kfid: str | None = None
    ) -> dict[str, Any]:
        body = {
            "open_kfid": self._kfid(open_kfid),
            "external_userid": external_userid,
            "servicer_userid": servicer_userid,
            "content": content,
        }
        return dict(self._call("POST", "/sim/sessions/servicer_message", body))

    def _servicer(
        self, action: str, external_userid: str, userid: str, open_kfid: str | None
    ) -> dict[str, Any]:
        body = {
            "open_kfid": self._kfid(open_kfid),
            "external_userid": external_userid,
            "servicer_userid": userid,
        }
        return dict(self._call("POST", f"/sim/sessions/{action}", body))

    def fail_message(
        self, external_userid: str, msgid: str, fail_type: int = 0, *, open_kfid: str | None = None
    ) -> dict[str, Any]:
        """Turn an accepted send into a msg_send_fail event (wecom-api §3)."""
        body = {
            "open_kfid": self._kfid(open_kfid),
            "external_userid": external_userid,
            "msgid": msgid,
            "fail_type": fail_type,
        }
        return dict(self._call("POST", "/sim/messages/fail", body))

    def set_servicer_status(self, userid: str, status: int, stop_type: int = 0) -> None:
        self._call("PUT", f"/sim/servicers/{userid}/status", {"status": status, "stop_type": stop_type})

    def set_routing(self, mode: str, *, open_kfid: str | None = None) -> None:
        self._call("PUT", f"/sim/accounts/{self._kfid(open_kfid)}/routing", {"mode": mode})

    # clock, tokens, faults
    def clock(self) -> dict[str, Any]:
        return dict(self._call("GET", "/sim/clock"))

    def advance(self, seconds: float) -> float:
        return float(self._call("POST", "/sim/clock/advance", {"seconds": seconds})["now"])

    def freeze(self) -> float:
        return float(self._call("POST", "/sim/clock/freeze")["now"])

    def unfreeze(self) -> float:
        return float(self._call("POST", "/sim/clock/unfreeze")["now"])

    def invalidate_tokens(self, app: str | None = None) -> int:
        return int(self._call("POST", "/sim/tokens/invalidate", {"app": app})["invalidated"])

    def invalidate_cursors(self, open_kfid: str | None = None) -> None:
        """Make WeCom refuse every sync_msg cursor it gave the account so far (40058)."""
        self._call("POST", f"/sim/accounts/{self._kfid(open_kfid)}/cursors/invalidate")

    def add_fault(
        self,
        api: str = "*",
        *,
        errcode: int | None = None,
        delay_ms: int = 0,
        drop: bool = False,
        unreachable: bool = False,
        duplicate: bool = False,
        invalidate_token: bool = False,
        rate: float = 1.0,
        times: int | None = None,
    ) -> dict[str, Any]:
        """A fault on an API (or `callback`); see `wxkf.simulator.faults`."""
        body = {
            "api": api,
            "errcode": errcode,
            "delay_ms": delay_ms,
            "drop": drop,
            "unreachable": unreachable,
            "duplicate": duplicate,
            "invalidate_token": invalidate_token,
            "rate": rate,
            "times": times,
        }
        return dict(self._call("POST", "/sim/faults", body))

    def faults(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/sim/faults"))

    def clear_faults(self) -> None:
        self._call("DELETE", "/sim/faults")

    # observation
    def calls(self, api: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Every WeCom API call made (secrets removed), oldest first."""
        params: dict[str, Any] = {"since": since}
        if api:
            params["api"] = api
        return list(self._call("GET", "/sim/calls", params=params))

    def callbacks(self) -> list[dict[str, Any]]:
        """Every callback delivery attempt: status, error, latency_ms."""
        return list(self._call("GET", "/sim/callbacks"))

    def wait_callbacks(self, timeout: float = 10.0) -> bool:
        """Block until no callback delivery is in flight; False on timeout."""
        return bool(self._call("POST", "/sim/callbacks/wait", {"timeout": timeout})["idle"])

    # customer contact and app messages
    def add_contact(self, userid: str, external_userid: str) -> None:
        self._call("POST", "/sim/contacts", {"userid": userid, "external_userid": external_userid})

    def remove_contact(self, userid: str, external_userid: str) -> None:
        self._call("DELETE", "/sim/contacts", {"userid": userid, "external_userid": external_userid})

    def confirm_group_msg(self, msgid: str, userid: str) -> dict[str, int]:
        """The member confirms an add_msg_template task; returns counts sent/not_friend/over_cap."""
        return dict(self._call("POST", f"/sim/group_msgs/{msgid}/confirm", {"userid": userid}))

    def app_messages(self, userid: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/sim/members/{userid}/app_messages"))


@dataclass
class SimulatorHandle:
    """What a running simulator gives a test: where it is, the seeded ids and secrets, the control."""

    base_url: str
    corp_id: str
    kf_secret: str
    contact_secret: str
    agent_id: int
    agent_secret: str
    callback_token: str
    encoding_aes_key: str
    open_kfid: str
    servicers: list[str]
    customers: list[str]
    member: str
    external_contacts: list[str]
    control: SimulatorControl
    extra: dict[str, Any] = field(default_factory=dict)

    def settings_overrides(self) -> dict[str, Any]:
        """Keyword arguments for `wxkf.config.Settings` that point wxkf at this simulator."""
        return {
            "wecom_corp_id": self.corp_id,
            "wecom_kf_secret": self.kf_secret,
            "wecom_contact_secret": self.contact_secret,
            "wecom_agent_id": self.agent_id,
            "wecom_agent_secret": self.agent_secret,
            "wecom_token": self.callback_token,
            "wecom_aes_key": self.encoding_aes_key,
            "wecom_api_base": self.base_url,
        }

    def crypto(self) -> CallbackCrypto:
        """The receiver side of the callbacks this simulator sends."""
        return CallbackCrypto(self.callback_token, self.encoding_aes_key, self.corp_id)


def handle_for(base_url: str, world: World) -> SimulatorHandle:
    account = next(iter(world.accounts.values()))
    member = world.members.get("wangwu") or next(iter(world.members.values()))
    contacts = set(member.external_contacts)
    agent = world.apps[AGENT_APP]
    return SimulatorHandle(
        base_url=base_url,
        corp_id=world.corp_id,
        kf_secret=world.apps[KF_APP].secret,
        contact_secret=world.apps[CONTACT_APP].secret,
        agent_id=agent.agent_id or 0,
        agent_secret=agent.secret,
        callback_token=world.callback_token,
        encoding_aes_key=world.encoding_aes_key,
        open_kfid=account.open_kfid,
        servicers=list(account.servicers),
        customers=[c for c in world.customers if c not in contacts],
        member=member.userid,
        external_contacts=list(member.external_contacts),
        control=SimulatorControl(base_url, account.open_kfid),
    )


class run_simulator:  # lower case: used like a function, `with run_simulator() as sim:`
    """Context manager (sync and async) running a seeded simulator on 127.0.0.1:<free port>."""

    def __init__(
        self,
        *,
        callback_url: str | None = None,
        seed: int = 20240101,
        customers: int = 3,
        behaviour: Behaviour | None = None,
        world: World | None = None,
    ) -> None:
        # Tests want quick retries (WeCom's own delay between retries is not published), and a URL
        # check that a loaded test machine cannot fail (WeCom gives the URL 1 s, wecom-api §1.4).
        self.world = world or seed_world(
            seed=seed,
            customers=customers,
            behaviour=behaviour or Behaviour(callback_retry_delay=0.05, url_verify_timeout=30.0),
        )
        self.callback_url = callback_url
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._handle: SimulatorHandle | None = None
        self._socket: socket.socket | None = None

    def start(self) -> SimulatorHandle:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        app = create_simulator_app(self.world, callback_url=self.callback_url)
        config = uvicorn.Config(app, log_level="warning", ws="none", lifespan="on", access_log=False)
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="wxkf-simulator"
        )
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:  # uvicorn exposes no event; poll its flag
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("模拟器启动失败 / the simulator did not start")
            time.sleep(0.005)
        self._server, self._thread, self._socket = server, thread, sock
        self._handle = handle_for(f"http://127.0.0.1:{port}", self.world)
        return self._handle

    @property
    def handle(self) -> SimulatorHandle:
        """The running simulator's handle (what `with` gave)."""
        if self._handle is None:
            raise RuntimeError("模拟器未启动 / the simulator is not running")
        return self._handle

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.control.close()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        if self._socket is not None:
            self._socket.close()  # uvicorn serves on our socket and leaves closing it to us
        self._server = self._thread = self._handle = self._socket = None

    def __enter__(self) -> SimulatorHandle:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatorHandle:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
