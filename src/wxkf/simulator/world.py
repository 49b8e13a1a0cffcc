"""The simulated WeCom world: corp, apps, tokens, kf accounts, servicers, customers and sessions.

Everything here is plain synchronous Python with no I/O. The HTTP layer calls it from one event
loop, and no method awaits, so each call is atomic without a lock — which is also why the simulator
is not the bottleneck under concurrent traffic (see benchmarks/bench_simulator.py).

Rules raise `SimError(errcode)`; each cites the spec section (`wecom-api §n`) it comes from.
"""

from __future__ import annotations

import base64
import bisect
import json
import random
import re
import secrets
import string
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wxkf.simulator.behaviour import Behaviour, RoutingMode, first_state
from wxkf.simulator.clock import SimClock
from wxkf.simulator.errors import SimError
from wxkf.wecom.models import CUSTOMER_MSGTYPES

MSGID_RE = re.compile(r"^[0-9a-zA-Z_-]{1,32}$")
MENU_ITEM_TYPES = frozenset({"click", "view", "miniprogram", "text"})
SEND_MSGTYPES = frozenset(
    {"text", "image", "voice", "video", "file", "link", "miniprogram", "msgmenu", "location", "ca_link"}
)


def _rand(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _utf8_len(text: object) -> int:
    return len(str(text).encode("utf-8"))


@dataclass
class App:
    """A self-built app or a system secret: what its access_token may call."""

    name: str
    secret: str
    scopes: frozenset[str]  # "kf", "contact", "message"
    agent_id: int | None = None


@dataclass
class AccessToken:
    value: str
    app: App
    expires_at: float
    invalidated: bool = False


@dataclass
class Member:
    """An enterprise member (成员). Servicers and group-message senders are members."""

    userid: str
    name: str
    activated: bool = True  # wecom-api §6: a servicer must be 激活 in WeCom, else 95014
    status: int = 0  # wecom-api §8 servicer/list: 0 接待中, 1 停止接待
    stop_type: int = 0  # 0 停止接待, 1 暂时挂起
    external_contacts: list[str] = field(default_factory=list)
    app_messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Customer:
    """A WeChat user: a kf customer and/or a member's external contact."""

    external_userid: str
    nickname: str
    gender: int = 0
    unionid: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    enter_context: dict[str, dict[str, Any]] = field(default_factory=dict)  # per open_kfid
    group_msgs_at: list[float] = field(default_factory=list)


@dataclass
class Session:
    """One conversation of (open_kfid, external_userid), wecom-api §6."""

    open_kfid: str
    external_userid: str
    state: int = 4  # 已结束/未开始
    servicer_userid: str = ""
    last_customer_msg_at: float | None = None
    budget_left: int = 0
    reply_code_states: set[int] = field(default_factory=set)  # states whose "first change" code was given
    welcome_at: float | None = None
    upgrade: dict[str, Any] | None = None  # the 升级服务 recommendation shown to servicers (§8)


@dataclass
class EventCode:
    """A send_msg_on_event code (wecom-api §5)."""

    code: str
    open_kfid: str
    external_userid: str
    kind: str  # welcome | pool | servicer | end
    required_state: int | None
    expires_at: float
    msgtypes: frozenset[str]
    used: bool = False


@dataclass
class KfAccount:
    open_kfid: str
    name: str
    servicers: list[str] = field(default_factory=list)
    routing: RoutingMode = RoutingMode.API
    log: list[dict[str, Any]] = field(default_factory=list)  # sync_msg items (origin 3/4/5)
    log_times: list[int] = field(default_factory=list)
    msgids: set[str] = field(default_factory=set)
    cursor_key: str = ""
    tokenless_calls: deque[float] = field(default_factory=deque)
    contact_way_scenes: set[str] = field(default_factory=set)


@dataclass
class CallbackToken:
    value: str
    open_kfid: str
    expires_at: float


@dataclass
class Media:
    media_id: str
    type: str
    filename: str
    content_type: str
    data: bytes
    created_at: float


@dataclass
class GroupMsg:
    """An add_msg_template task (wecom-api §9): per sender, the customers it goes to."""

    msgid: str
    creator: str
    create_time: int
    text: dict[str, Any] | None
    attachments: list[dict[str, Any]]
    targets: dict[str, list[str]]  # sender userid → external_userids
    # per (userid, external_userid): status 0 未发送 1 已发送 2 非好友 3 超过接收上限
    results: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # → (status, send_time)
    confirmed: dict[str, int] = field(default_factory=dict)  # userid → send_time
    reminders: list[float] = field(default_factory=list)
    cancelled: bool = False


CallbackHook = Callable[[str, str, int], None]  # (open_kfid, token, create_time)


class World:
    """The whole simulated state. `clock` and `behaviour` are shared with the HTTP layer."""

    def __init__(self, *, seed: int | None = None, behaviour: Behaviour | None = None) -> None:
        self.rng = random.Random(seed)
        self.clock = SimClock()
        self.behaviour = behaviour or Behaviour()
        self.corp_id = "ww" + _rand(self.rng, 16, "0123456789abcdef")
        self.callback_token = _rand(self.rng, 32)
        self.encoding_aes_key = self._new_aes_key()
        self.apps: dict[str, App] = {}
        self.members: dict[str, Member] = {}
        self.customers: dict[str, Customer] = {}
        self.accounts: dict[str, KfAccount] = {}
        self.sessions: dict[tuple[str, str], Session] = {}
        self.tokens: dict[str, AccessToken] = {}
        self.current_token: dict[str, AccessToken] = {}  # per app name
        self.callback_tokens: dict[str, CallbackToken] = {}
        self.event_codes: dict[str, EventCode] = {}
        self.media: dict[str, Media] = {}
        self.group_msgs: dict[str, GroupMsg] = {}
        # wecom-api §8 升级服务: the members and customer groups configured in the admin console.
        self.upgrade_members: list[str] = []
        self.upgrade_groupchats: list[str] = []
        self.on_callback: CallbackHook | None = None
        self._seq = 0

    def reset(self) -> None:
        """Forget all traffic (sessions, logs, tokens, codes, media, group messages, what anyone
        received) and restore the clock and behaviour; keep the population (apps, accounts,
        servicers, members, customers and contacts)."""
        self.clock = SimClock()
        self.behaviour = Behaviour()
        self.sessions.clear()
        self.tokens.clear()
        self.current_token.clear()
        self.callback_tokens.clear()
        self.event_codes.clear()
        self.media.clear()
        self.group_msgs.clear()
        for account in self.accounts.values():
            account.log.clear()
            account.log_times.clear()
            account.msgids.clear()
            account.tokenless_calls.clear()
        for customer in self.customers.values():
            customer.received.clear()
            customer.enter_context.clear()
            customer.group_msgs_at.clear()
        for member in self.members.values():
            member.app_messages.clear()
            member.status, member.stop_type = 0, 0

    # -- ids ---------------------------------------------------------------------------------

    def _new_aes_key(self) -> str:
        # wecom-api §1.1: 43 letters/digits that base64-decode (with "=") to 32 bytes.
        while True:
            key = base64.b64encode(self.rng.randbytes(32)).decode().rstrip("=")
            if key.isalnum():
                return key

    def new_id(self, prefix: str, length: int = 30) -> str:
        return prefix + _rand(self.rng, length, string.ascii_letters + string.digits + "_-")

    def next_msgid(self) -> str:
        self._seq += 1
        return f"{self._seq:x}{_rand(self.rng, 16)}"

    # -- world building ----------------------------------------------------------------------

    def add_app(self, name: str, scopes: set[str], agent_id: int | None = None) -> App:
        app = App(name, _rand(self.rng, 43), frozenset(scopes), agent_id)
        self.apps[name] = app
        return app

    def add_member(self, userid: str, name: str, *, activated: bool = True) -> Member:
        member = Member(userid, name, activated=activated)
        self.members[userid] = member
        return member

    def add_customer(self, nickname: str, external_userid: str | None = None) -> Customer:
        eu = external_userid or self.new_id("wm")
        if eu in self.customers:
            raise SimError(40058, f"'external_userid' {eu} exists")
        customer = Customer(eu, nickname, unionid=self.new_id("o", 27))
        self.customers[eu] = customer
        return customer

    def add_account(self, name: str, routing: RoutingMode = RoutingMode.API) -> KfAccount:
        if len(name) > 16 or not name:
            raise SimError(95006, "name must be 1-16 characters")
        if len(self.accounts) >= 5000:
            raise SimError(95005)  # wecom-api §8: at most 5000 accounts
        account = KfAccount(self.new_id("wk"), name, routing=routing, cursor_key=_rand(self.rng, 6))
        self.accounts[account.open_kfid] = account
        return account

    def add_external_contact(self, userid: str, external_userid: str) -> None:
        member = self.member(userid)
        self.customer(external_userid)
        if external_userid not in member.external_contacts:
            member.external_contacts.append(external_userid)

    def remove_external_contact(self, userid: str, external_userid: str) -> None:
        member = self.member(userid)
        if external_userid in member.external_contacts:
            member.external_contacts.remove(external_userid)

    # -- lookups -----------------------------------------------------------------------------

    def account(self, open_kfid: object) -> KfAccount:
        if not isinstance(open_kfid, str) or not open_kfid:
            raise SimError(95000)
        account = self.accounts.get(open_kfid)
        if account is None:
            raise SimError(95004)  # wecom-api §7.1: open_kfid不存在
        return account

    def customer(self, external_userid: object) -> Customer:
        customer = self.customers.get(external_userid) if isinstance(external_userid, str) else None
        if customer is None:
            raise SimError(40096)
        return customer

    def member(self, userid: object) -> Member:
        member = self.members.get(userid) if isinstance(userid, str) else None
        if member is None:
            raise SimError(60111)
        return member

    def session(self, open_kfid: str, external_userid: str) -> Session:
        key = (open_kfid, external_userid)
        found = self.sessions.get(key)
        if found is None:
            found = self.sessions[key] = Session(open_kfid, external_userid)
        return found

    # -- access tokens (wecom-api §7.4) -----------------------------------------------------

    def gettoken(self, corpid: object, corpsecret: object) -> tuple[str, int]:
        if corpid != self.corp_id:
            raise SimError(40013)
        app = next((a for a in self.apps.values() if a.secret == corpsecret), None)
        if app is None:
            raise SimError(40001)
        now = self.clock.now()
        current = self.current_token.get(app.name)
        # §7.4 (older revision): within its lifetime the same token is returned.
        if current is not None and not current.invalidated and current.expires_at > now:
            return current.value, int(current.expires_at - now)
        token = AccessToken(secrets.token_urlsafe(48), app, now + self.behaviour.access_token_ttl)
        self.tokens[token.value] = token
        self.current_token[app.name] = token
        return token.value, self.behaviour.access_token_ttl

    def authorize(self, access_token: object, scope: str | None) -> App:
        if not access_token or not isinstance(access_token, str):
            raise SimError(41001)
        token = self.tokens.get(access_token)
        if token is None:
            raise SimError(40014)
        # §7.4: "企业微信可能会出于运营需要，提前使access_token失效" → 42001 either way.
        if token.invalidated or token.expires_at <= self.clock.now():
            raise SimError(42001)
        if scope is not None and scope not in token.app.scopes:
            raise SimError(48002)  # §9: contact APIs need the 客户联系 secret, etc.
        return token.app

    def invalidate_tokens(self, app_name: str | None = None) -> int:
        count = 0
        for token in self.tokens.values():
            if (app_name is None or token.app.name == app_name) and not token.invalidated:
                token.invalidated = True
                count += 1
        return count

    def invalidate_cursors(self, open_kfid: object) -> None:
        """Every sync_msg cursor this account handed out is refused from now on (40058), as WeCom may
        refuse a cursor it no longer knows; a sync without a cursor still starts from 3 days back."""
        account = self.account(open_kfid)
        account.cursor_key = _rand(self.rng, 6)

    # -- callbacks and the sync log ----------------------------------------------------------

    def _append(self, account: KfAccount, item: dict[str, Any]) -> None:
        account.log.append(item)
        account.log_times.append(item["send_time"])

    def notify(self, open_kfid: str) -> str:
        """A customer or servicer acted: issue a callback Token (§2, 10 min) and fire the hook."""
        now = self.clock.now()
        token = "ENC" + _rand(self.rng, 44)
        self.callback_tokens[token] = CallbackToken(token, open_kfid, now + self.behaviour.callback_token_ttl)
        if len(self.callback_tokens) > 50_000:
            self.callback_tokens = {k: v for k, v in self.callback_tokens.items() if v.expires_at > now}
        if self.on_callback is not None:
            self.on_callback(open_kfid, token, int(now))
        return token

    def _event(self, account: KfAccount, event: dict[str, Any]) -> dict[str, Any]:
        item = {
            "msgid": self.next_msgid(),
            "send_time": self.clock.seconds(),
            "origin": 4,
            "msgtype": "event",
            "event": {"open_kfid": account.open_kfid, **event},
        }
        self._append(account, item)
        return item

    def _issue_code(
        self, session: Session, kind: str, required_state: int | None, ttl: int, msgtypes: set[str]
    ) -> str:
        code = "CODE" + _rand(self.rng, 40)
        self.event_codes[code] = EventCode(
            code,
            session.open_kfid,
            session.external_userid,
            kind,
            required_state,
            self.clock.now() + ttl,
            frozenset(msgtypes),
        )
        return code

    # -- customer actions (control API) -----------------------------------------------------

    def customer_enters(
        self, open_kfid: str, external_userid: str, scene: str = "", scene_param: str = ""
    ) -> dict[str, Any]:
        """The customer opens the kf chat from a link: an enter_session event (§3, §5)."""
        account = self.account(open_kfid)
        customer = self.customer(external_userid)
        session = self.session(open_kfid, external_userid)
        now = self.clock.now()
        window = self.behaviour.send_window
        event: dict[str, Any] = {"event_type": "enter_session", "external_userid": external_userid}
        if scene:
            event["scene"] = scene
        if scene_param:
            event["scene_param"] = scene_param
        # §5: a welcome_code only if no welcome in the last 48 h and the customer has not written.
        wrote_recently = (
            session.last_customer_msg_at is not None and now - session.last_customer_msg_at < window
        )
        welcomed_recently = session.welcome_at is not None and now - session.welcome_at < window
        if not wrote_recently and not welcomed_recently:
            event["welcome_code"] = self._issue_code(
                session, "welcome", None, self.behaviour.welcome_code_ttl, {"text", "msgmenu"}
            )
        customer.enter_context[open_kfid] = {"scene": scene, "scene_param": scene_param, "at": now}
        item = self._event(account, event)
        self.notify(open_kfid)
        return item

    def customer_sends(
        self,
        open_kfid: str,
        external_userid: str,
        msgtype: str,
        body: dict[str, Any],
        *,
        future: bool = False,
    ) -> dict[str, Any]:
        """A customer message (origin 3): opens the session, resets the 48 h / 5 budget (§4, §6).

        `future`: a msgtype WeCom may add later (any lower-case name), to see that a receiver keeps it."""
        account = self.account(open_kfid)
        self.customer(external_userid)
        _refuse_unencodable(body)
        if msgtype not in CUSTOMER_MSGTYPES and not (future and re.fullmatch(r"[a-z][a-z_]{0,31}", msgtype)):
            raise SimError(40058, f"msgtype {msgtype}")
        if msgtype in ("image", "voice", "video", "file"):
            self.media_get(body.get("media_id"))  # the customer's file is a media_id of 3 days (§3)
        session = self.session(open_kfid, external_userid)
        now = self.clock.now()
        if session.state == 4:
            # §6: "客户发消息咨询后会话状态变为未处理"; the 接待方式 then routes it.
            servicer = self._pick_servicer(account)
            session.state = first_state(account.routing, servicer is not None)
            session.servicer_userid = servicer if session.state == 3 and servicer else ""
            session.reply_code_states = set()
        # §4: each customer message allows 5 more messages within 48 h.
        session.last_customer_msg_at = now
        session.budget_left = self.behaviour.send_budget
        item = {
            "msgid": self.next_msgid(),
            "open_kfid": open_kfid,
            "external_userid": external_userid,
            "send_time": int(now),
            "origin": 3,
            "msgtype": msgtype,
            msgtype: body,
        }
        self._append(account, item)
        self.notify(open_kfid)
        return item

    def customer_clicks(self, open_kfid: str, external_userid: str, menu_id: str) -> dict[str, Any]:
        """The customer taps a click item of a menu they received: a text with its `menu_id` (§3, §4)."""
        customer = self.customer(external_userid)
        for record in reversed(customer.received):
            if record.get("open_kfid") != open_kfid or record.get("msgtype") != "msgmenu":
                continue
            for item in record["msgmenu"].get("list", []):
                click = item.get("click") if isinstance(item, dict) else None
                if item.get("type") == "click" and isinstance(click, dict) and click.get("id") == menu_id:
                    body = {"content": click.get("content", ""), "menu_id": menu_id}
                    return self.customer_sends(open_kfid, external_userid, "text", body)
        raise SimError(40058, f"no menu with click id {menu_id!r} was sent to {external_userid}")

    def customer_recalls(self, open_kfid: str, external_userid: str, msgid: str) -> dict[str, Any]:
        account = self.account(open_kfid)
        self.customer(external_userid)
        item = self._event(
            account,
            {"event_type": "user_recall_msg", "external_userid": external_userid, "recall_msgid": msgid},
        )
        self.notify(open_kfid)
        return item

    def _pick_servicer(self, account: KfAccount) -> str | None:
        active = [u for u in account.servicers if self.members[u].status == 0 and self.members[u].activated]
        return self.rng.choice(active) if active else None

    # -- servicer actions (control API; §3 session_status_change, "均为接待人员在客户端操作触发") --

    def _status_change(self, session: Session, change_type: int, old: str, new: str) -> dict[str, Any]:
        account = self.account(session.open_kfid)
        event: dict[str, Any] = {
            "event_type": "session_status_change",
            "external_userid": session.external_userid,
            "change_type": change_type,
        }
        if change_type in (2, 3, 4):
            event["old_servicer_userid"] = old
        if change_type in (1, 2, 4):
            event["new_servicer_userid"] = new
        if change_type == 1:  # §5: 从接待池接入 → 提示语 code, 48 h, text only
            event["msg_code"] = self._issue_code(
                session, "servicer", 3, self.behaviour.reply_code_ttl, {"text"}
            )
        if change_type == 3:  # §5: 结束会话 → 结束语 code, 20 s
            event["msg_code"] = self._issue_code(
                session, "end", 4, self.behaviour.end_code_ttl, {"text", "msgmenu"}
            )
        item = self._event(account, event)
        self.notify(session.open_kfid)
        return item

    def _active_servicer(self, account: KfAccount, userid: str) -> None:
        member = self.members.get(userid)
        if member is None or userid not in account.servicers or not member.activated:
            raise SimError(95014)  # §6: 用户不是接待人员 (or not activated)
        if member.status != 0:
            raise SimError(95019)  # §6: 接待人员已停止接待或暂时挂起

    def servicer_takes(self, open_kfid: str, external_userid: str, userid: str) -> dict[str, Any]:
        """A servicer picks the session up from the pool (or from the assistant): change_type 1."""
        account = self.account(open_kfid)
        self._active_servicer(account, userid)
        session = self.session(open_kfid, external_userid)
        if session.state not in (0, 1, 2):
            raise SimError(95016, f"take from state {session.state}")
        session.state, session.servicer_userid = 3, userid
        return self._status_change(session, 1, "", userid)

    def servicer_transfers(self, open_kfid: str, external_userid: str, to_userid: str) -> dict[str, Any]:
        account = self.account(open_kfid)
        self._active_servicer(account, to_userid)
        session = self.session(open_kfid, external_userid)
        if session.state != 3:
            raise SimError(95016, f"transfer from state {session.state}")
        old, session.servicer_userid = session.servicer_userid, to_userid
        return self._status_change(session, 2, old, to_userid)

    def servicer_ends(self, open_kfid: str, external_userid: str) -> dict[str, Any]:
        self.account(open_kfid)
        session = self.session(open_kfid, external_userid)
        if session.state != 3:
            raise SimError(95016, f"end from state {session.state}")
        old = session.servicer_userid
        session.state, session.servicer_userid = 4, ""
        return self._status_change(session, 3, old, "")

    def servicer_sends(self, open_kfid: str, external_userid: str, userid: str, text: str) -> dict[str, Any]:
        """A servicer writes from the WeCom client (origin 5). In state 4 this reopens (change_type 4)."""
        _refuse_unencodable(text)
        account = self.account(open_kfid)
        self._active_servicer(account, userid)
        customer = self.customer(external_userid)
        session = self.session(open_kfid, external_userid)
        if session.state == 4:
            # §6: "接待人员通过客户端在已结束会话中成功发送消息后，会话状态变为由人工接待".
            session.state, session.servicer_userid = 3, userid
            self._status_change(session, 4, "", userid)
        elif session.state != 3:
            self.servicer_takes(open_kfid, external_userid, userid)
        elif session.servicer_userid != userid:
            raise SimError(95014, f"{userid} is not this session's servicer")
        now = self.clock.now()
        msgid = self.next_msgid()
        item = {
            "msgid": msgid,
            "open_kfid": open_kfid,
            "external_userid": external_userid,
            "send_time": int(now),
            "origin": 5,
            "servicer_userid": userid,
            "msgtype": "text",
            "text": {"content": text},
        }
        self._append(account, item)
        self._deliver(customer, open_kfid, msgid, "text", {"content": text}, via="servicer")
        self.notify(open_kfid)
        return item

    def set_servicer_status(self, userid: str, status: int, stop_type: int = 0) -> None:
        """§3 servicer_status_change (status there: 1 接待中 2 停止接待; servicer/list: 0 / 1)."""
        member = self.member(userid)
        member.status, member.stop_type = status, stop_type
        for account in self.accounts.values():
            if userid in account.servicers:
                event = {
                    "event_type": "servicer_status_change",
                    "servicer_userid": userid,
                    "status": 1 if status == 0 else 2,
                    "stop_type": stop_type,
                }
                self._event(account, event)
                self.notify(account.open_kfid)

    def force_state(
        self, open_kfid: str, external_userid: str, state: int, servicer_userid: str = ""
    ) -> Session:
        """Control API: put a session in any state, bypassing the rules (for tests and demos)."""
        self.account(open_kfid)
        self.customer(external_userid)
        if state not in (0, 1, 2, 3, 4):
            raise SimError(40058, "service_state")
        session = self.session(open_kfid, external_userid)
        session.state = state
        session.servicer_userid = servicer_userid if state == 3 else ""
        if state in (0, 1) and session.last_customer_msg_at is None:
            session.last_customer_msg_at = self.clock.now()
            session.budget_left = self.behaviour.send_budget
        return session

    # -- service_state (wecom-api §6) --------------------------------------------------------

    def service_state_get(self, open_kfid: object, external_userid: object) -> dict[str, Any]:
        account = self.account(open_kfid)
        customer = self.customer(external_userid)
        session = self.session(account.open_kfid, customer.external_userid)
        return {"service_state": session.state, "servicer_userid": session.servicer_userid}

    def service_state_trans(
        self, open_kfid: object, external_userid: object, state: object, servicer_userid: object
    ) -> str:
        account = self.account(open_kfid)
        customer = self.customer(external_userid)
        if not isinstance(state, int) or state not in (0, 1, 2, 3, 4):
            raise SimError(40058, "'service_state'")
        session = self.session(account.open_kfid, customer.external_userid)
        if state not in self.behaviour.transitions.get(session.state, []):
            raise SimError(95016, f"{session.state} -> {state}")
        if state == 3:
            if not isinstance(servicer_userid, str) or not servicer_userid:
                raise SimError(95014, "servicer_userid required for state 3")
            self._active_servicer(account, servicer_userid)
        old_state = session.state
        session.state = state
        session.servicer_userid = servicer_userid if state == 3 and isinstance(servicer_userid, str) else ""
        # §6: "将会话初次变更为service_state为2和3时，返回回复语code，service_state为4时，返回结束语code".
        # API moves produce no session_status_change event (§3 note).
        if state == 4:
            session.reply_code_states = set()
            return self._issue_code(session, "end", 4, self.behaviour.end_code_ttl, {"text", "msgmenu"})
        if state in (2, 3) and state != old_state and state not in session.reply_code_states:
            session.reply_code_states.add(state)
            kind = "pool" if state == 2 else "servicer"
            return self._issue_code(session, kind, state, self.behaviour.reply_code_ttl, {"text"})
        return ""

    # -- sending (wecom-api §4, §5) ----------------------------------------------------------

    def _check_body(self, msgtype: object, body: object, allowed: frozenset[str]) -> dict[str, Any]:
        if not isinstance(msgtype, str) or msgtype not in allowed:
            raise SimError(40058, f"'msgtype' {msgtype}")
        if not isinstance(body, dict):
            raise SimError(40058, f"'{msgtype}' body missing")
        if msgtype == "text":
            content = body.get("content")
            if not isinstance(content, str) or not content:
                raise SimError(40058, "'text.content'")
            if _utf8_len(content) > self.behaviour.text_max_bytes:
                # §4: text 最长不超过2048个字节; errcode UNCONFIRMED → 45002 消息内容大小超过限制.
                raise SimError(45002, f"text.content over {self.behaviour.text_max_bytes} bytes")
        elif msgtype == "msgmenu":
            items = body.get("list", [])
            if not isinstance(items, list):
                raise SimError(40058, "'msgmenu.list'")
            if len(items) > self.behaviour.menu_max_items:
                raise SimError(95008)  # §4: ≤10 menu items
            for menu_item in items:
                kind = menu_item.get("type") if isinstance(menu_item, dict) else None
                if kind not in MENU_ITEM_TYPES or not isinstance(menu_item.get(kind), dict):
                    raise SimError(95009)  # §4: invalid menu item type
        elif msgtype in ("image", "voice", "video", "file"):
            self.media_get(body.get("media_id"))
        elif msgtype == "miniprogram":
            # wecom-api §4: appid, pagepath and thumb_media_id are required; the thumb is an uploaded
            # image (封面 520*416, media_id valid 3 days, §8); a title over 64 bytes is cut, not refused.
            for key in ("appid", "pagepath", "thumb_media_id"):
                if not isinstance(body.get(key), str) or not body[key]:
                    raise SimError(40058, f"'miniprogram.{key}' missing")
            if self.media_get(body["thumb_media_id"]).type != "image":
                raise SimError(40007, "'miniprogram.thumb_media_id' is not an image")
            title = body.get("title")
            if isinstance(title, str) and _utf8_len(title) > self.behaviour.miniprogram_title_max_bytes:
                raw = title.encode()[: self.behaviour.miniprogram_title_max_bytes]
                body = {**body, "title": raw.decode("utf-8", errors="ignore")}
        return body

    def _deliver(
        self, customer: Customer, open_kfid: str, msgid: str, msgtype: str, body: dict[str, Any], *, via: str
    ) -> dict[str, Any]:
        record = {
            "at": self.clock.now(),
            "open_kfid": open_kfid,
            "msgid": msgid,
            "msgtype": msgtype,
            msgtype: body,
            "via": via,
            "delivered": True,
        }
        customer.received.append(record)
        return record

    def _claim_msgid(self, account: KfAccount, msgid: object) -> str:
        if msgid is None or msgid == "":
            msgid = self.next_msgid()
            while msgid in account.msgids:
                msgid = self.next_msgid()
        elif not isinstance(msgid, str) or not MSGID_RE.match(msgid):
            raise SimError(40058, "'msgid' must be ≤32 of [0-9a-zA-Z_-]")
        elif msgid in account.msgids:
            # §4: "若指定msgid，开发者需确保客服账号内唯一，否则接口返回错误".
            raise SimError(self.behaviour.duplicate_msgid_errcode, f"'msgid' {msgid} duplicated")
        account.msgids.add(msgid)
        return msgid

    def send_msg(self, payload: dict[str, Any]) -> str:
        account = self.account(payload.get("open_kfid"))
        customer = self.customer(payload.get("touser"))
        msgtype = payload.get("msgtype")
        body = self._check_body(msgtype, payload.get(str(msgtype)), SEND_MSGTYPES)
        session = self.session(account.open_kfid, customer.external_userid)
        now = self.clock.now()
        if session.state not in (0, 1):
            raise SimError(95018)  # §4: only 新接入待处理 (0) or 由智能助手接待 (1)
        if (
            session.last_customer_msg_at is None
            or now - session.last_customer_msg_at > self.behaviour.send_window
        ):
            raise SimError(self.behaviour.window_errcode)  # §4: 48 h after the customer's message
        if session.budget_left <= 0:
            raise SimError(95001)  # §4: 5 messages per customer message
        msgid = self._claim_msgid(account, payload.get("msgid"))
        session.budget_left -= 1
        if session.state == 0:
            session.state = 1  # §4: "通过API发消息…会将客户分配给智能助手"
        record = self._deliver(customer, account.open_kfid, msgid, str(msgtype), body, via="send_msg")
        if self.behaviour.msg_send_fail_rate and self.rng.random() < self.behaviour.msg_send_fail_rate:
            self.fail_message(record, customer, self.behaviour.msg_send_fail_type)
        return msgid

    def fail_message(self, record: dict[str, Any], customer: Customer, fail_type: int) -> None:
        """§3 msg_send_fail: the accepted message did not reach the customer."""
        record["delivered"] = False
        record["fail_type"] = fail_type
        account = self.account(record["open_kfid"])
        self._event(
            account,
            {
                "event_type": "msg_send_fail",
                "external_userid": customer.external_userid,
                "fail_msgid": record["msgid"],
                "fail_type": fail_type,
            },
        )
        self.notify(account.open_kfid)

    def send_msg_on_event(self, payload: dict[str, Any]) -> str:
        code = self.event_codes.get(payload.get("code"))  # type: ignore[arg-type]
        now = self.clock.now()
        bad = self.behaviour.bad_event_code_errcode
        if code is None or code.used:
            raise SimError(bad, "code invalid or used")  # §5: 仅可使用一次
        if code.expires_at <= now:
            raise SimError(bad, "code expired")  # §5: 20 s / 48 h validity
        msgtype = payload.get("msgtype")
        body = self._check_body(msgtype, payload.get(str(msgtype)), code.msgtypes)
        session = self.session(code.open_kfid, code.external_userid)
        # §5: "除用户进入会话事件以外，响应消息仅支持会话处于获取该code的会话状态时发送".
        if code.required_state is not None and session.state != code.required_state:
            raise SimError(95018, f"code is for state {code.required_state}")
        account = self.account(code.open_kfid)
        msgid = self._claim_msgid(account, payload.get("msgid"))
        code.used = True
        if code.kind == "welcome":
            session.welcome_at = now
        self._deliver(
            self.customer(code.external_userid), code.open_kfid, msgid, str(msgtype), body, via=code.kind
        )
        return msgid

    # -- sync_msg (wecom-api §3) -------------------------------------------------------------

    def _cursor(self, account: KfAccount, position: int) -> str:
        raw = f"{account.cursor_key}:{position}:{_rand(self.rng, 4)}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _position(self, account: KfAccount, cursor: str) -> int:
        try:
            key, pos, _ = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(":")
            position = int(pos)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SimError(40058, "'cursor'") from exc
        if key != account.cursor_key or not 0 <= position <= len(account.log):
            raise SimError(40058, "'cursor'")
        return position

    def sync_msg(self, payload: dict[str, Any]) -> dict[str, Any]:
        if not payload.get("open_kfid") and not self.behaviour.sync_msg_requires_open_kfid:
            return self._sync_all_accounts(payload)
        account = self.account(payload.get("open_kfid"))
        now = self.clock.now()
        token = payload.get("token") or ""
        if token:
            found = self.callback_tokens.get(token)
            # §2/§3: the callback Token is valid 10 minutes; expired or unknown → 95007 (§3 inference).
            if found is None or found.expires_at <= now or found.open_kfid != account.open_kfid:
                raise SimError(95007)
        elif self.behaviour.tokenless_sync_per_minute is not None:
            calls = account.tokenless_calls
            while calls and calls[0] <= now - 60:
                calls.popleft()
            if len(calls) >= self.behaviour.tokenless_sync_per_minute:
                raise SimError(45009, "sync_msg without token")  # §3: 不填token有严格的频率限制
            calls.append(now)
        limit = payload.get("limit") or self.behaviour.sync_max_limit
        if not isinstance(limit, int) or not 0 < limit <= self.behaviour.sync_max_limit:
            raise SimError(40058, "'limit' must be 1..1000")  # §3: 默认值和最大值都为1000
        cursor = payload.get("cursor") or ""
        if not isinstance(cursor, str) or len(cursor) > 64:
            raise SimError(40058, "'cursor'")
        position = self._position(account, cursor) if cursor else 0
        # §3: only the last 3 days; without a cursor "从3天内最早的消息开始返回".
        horizon = bisect.bisect_left(account.log_times, int(now) - self.behaviour.sync_horizon)
        position = max(position, horizon)
        remaining = len(account.log) - position
        if (
            remaining > 0
            and self.behaviour.empty_page_rate
            and self.rng.random() < self.behaviour.empty_page_rate
        ):
            return {"next_cursor": self._cursor(account, position), "has_more": 1, "msg_list": []}
        end = min(position + limit, len(account.log))
        msg_list = account.log[position:end]
        return {
            "next_cursor": self._cursor(account, end),
            "has_more": 1 if end < len(account.log) else 0,
            "msg_list": msg_list,
        }

    def _sync_all_accounts(self, payload: dict[str, Any]) -> dict[str, Any]:
        """§3, older revisions: without open_kfid, "默认返回有权限的客服帐号的消息" — every account's
        items, account after account; the cursor holds one position per account."""
        cursor = payload.get("cursor") or ""
        positions: dict[str, int] = {}
        if cursor:
            try:
                raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
                positions = {k: int(v) for k, v in (part.split("=") for part in raw.split(",") if part)}
            except (ValueError, UnicodeDecodeError) as exc:
                raise SimError(40058, "'cursor'") from exc
        limit = payload.get("limit") or self.behaviour.sync_max_limit
        if not isinstance(limit, int) or not 0 < limit <= self.behaviour.sync_max_limit:
            raise SimError(40058, "'limit' must be 1..1000")
        msg_list: list[dict[str, Any]] = []
        has_more = 0
        for index, account in enumerate(self.accounts.values()):
            start = positions.get(str(index), 0)
            take = account.log[start : start + limit - len(msg_list)]
            msg_list.extend(take)
            positions[str(index)] = start + len(take)
            if positions[str(index)] < len(account.log):
                has_more = 1
        raw_cursor = ",".join(f"{k}={v}" for k, v in sorted(positions.items()))
        return {
            "next_cursor": base64.urlsafe_b64encode(raw_cursor.encode()).decode().rstrip("="),
            "has_more": has_more,
            "msg_list": msg_list,
        }

    # -- upgrade service (wecom-api §8, doc 94674) -------------------------------------------

    def upgrade_service(self, payload: dict[str, Any]) -> None:
        account = self.account(payload.get("open_kfid"))
        customer = self.customer(payload.get("external_userid"))
        kind = payload.get("type")
        if kind not in (1, 2):
            raise SimError(40058, "'type' must be 1 or 2")
        key, field, allowed = (
            ("member", "userid", self.upgrade_members)
            if kind == 1
            else ("groupchat", "chat_id", self.upgrade_groupchats)
        )
        target = payload.get(key)
        if not isinstance(target, dict) or not isinstance(target.get(field), str):
            raise SimError(40058, f"'{key}.{field}'")
        if target[field] not in allowed:
            # "要求userid/chatid已配置在微信客服中的“升级服务”中…否则会返回95021错误码".
            raise SimError(95021, f"{target[field]} is not configured in 升级服务")
        session = self.session(account.open_kfid, customer.external_userid)
        session.upgrade = {"type": kind, key: dict(target)}
        record = {"type": kind, key: dict(target)}
        self._deliver(
            customer, account.open_kfid, self.next_msgid(), "upgrade_service", record, via="upgrade"
        )

    def cancel_upgrade_service(self, payload: dict[str, Any]) -> None:
        account = self.account(payload.get("open_kfid"))
        customer = self.customer(payload.get("external_userid"))
        self.session(account.open_kfid, customer.external_userid).upgrade = None

    # -- media (wecom-api §8) ----------------------------------------------------------------

    def media_upload(self, media_type: object, filename: str, content_type: str, data: bytes) -> Media:
        limits = {"image": 10 << 20, "voice": 2 << 20, "video": 10 << 20, "file": 20 << 20}
        if media_type not in limits:
            raise SimError(40004)
        if not data:
            raise SimError(44001)
        if len(data) <= 5 or len(data) > limits[str(media_type)]:
            raise SimError(40006)  # §8: 所有文件size必须大于5个字节; per-type caps
        if media_type == "image" and not data.startswith((b"\x89PNG", b"\xff\xd8\xff")):
            raise SimError(40004, "image must be JPG or PNG")  # §8: 图片（image）：10MB，支持JPG,PNG格式
        media = Media(
            "3" + _rand(self.rng, 63), str(media_type), filename, content_type, data, self.clock.now()
        )
        self.media[media.media_id] = media
        return media

    def media_get(self, media_id: object) -> Media:
        media = self.media.get(media_id) if isinstance(media_id, str) else None
        # §8: "media_id仅三天内有效".
        if media is None or self.clock.now() - media.created_at > self.behaviour.media_ttl:
            raise SimError(40007)
        return media


def _refuse_unencodable(value: Any) -> None:
    """A message must be valid UTF-8 to be synced (JSON allows a lone surrogate like \\ud83d, UTF-8 does
    not): refused as it arrives, or one bad message would break every later sync_msg of the account."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise SimError(40058, "not valid UTF-8 (a lone surrogate?)") from None
