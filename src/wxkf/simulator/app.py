"""The simulator's HTTP surface: WeCom's `/cgi-bin/...` APIs and the `/sim/...` control API.

WeCom APIs always answer HTTP 200 with `{"errcode", "errmsg", …}` (wecom-api §7.3), errors included.
They share one dispatcher, so call recording and fault injection apply to every API alike. The
control API answers JSON; a rule it breaks gives HTTP 400 with the same errcode/errmsg pair.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from wxkf.simulator import contact
from wxkf.simulator.behaviour import Behaviour, RoutingMode
from wxkf.simulator.callbacks import CallbackDispatcher
from wxkf.simulator.errors import SimError, errmsg_text, error_body
from wxkf.simulator.faults import Fault, FaultBook
from wxkf.simulator.world import App, World

# -- the WeCom API table -----------------------------------------------------------------------


@dataclass
class Call:
    """One WeCom API call as a handler sees it."""

    query: dict[str, str]
    body: dict[str, Any]
    app: App | None
    upload: tuple[str, str, bytes] | None = None  # (filename, content_type, data) for media/upload


Handler = Callable[[World, Call], "dict[str, Any] | Response"]


@dataclass(frozen=True)
class Api:
    handler: Handler
    methods: frozenset[str] = frozenset({"POST"})
    scope: str | None = "kf"  # None: any app's token; "" : no token (gettoken)
    extra: dict[str, Any] = field(default_factory=dict)


def _gettoken(world: World, call: Call) -> dict[str, Any]:
    token, expires_in = world.gettoken(call.query.get("corpid"), call.query.get("corpsecret"))
    return {"access_token": token, "expires_in": expires_in}


def _account_add(world: World, call: Call) -> dict[str, Any]:
    name = call.body.get("name")
    if not isinstance(name, str):
        raise SimError(95006)
    return {"open_kfid": world.add_account(name).open_kfid}


def _account_del(world: World, call: Call) -> dict[str, Any]:
    account = world.account(call.body.get("open_kfid"))
    if len(world.accounts) == 1:
        raise SimError(95005, "at least one account must remain")  # §7.1: 且至少有一个
    del world.accounts[account.open_kfid]
    return {}


def _account_update(world: World, call: Call) -> dict[str, Any]:
    account = world.account(call.body.get("open_kfid"))
    name = call.body.get("name")
    if name is not None:
        if not isinstance(name, str) or not 0 < len(name) <= 16:
            raise SimError(95006)
        account.name = name
    return {}


def _account_list(world: World, call: Call) -> dict[str, Any]:
    # §8: accepted with POST {offset, limit} and with the older GET without a body.
    offset = call.body.get("offset", 0)
    limit = call.body.get("limit", 100)
    if not isinstance(offset, int) or offset < 0 or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise SimError(40058, "'offset'/'limit'")
    accounts = list(world.accounts.values())[offset : offset + limit]
    return {
        "account_list": [
            {"open_kfid": a.open_kfid, "name": a.name, "avatar": "", "manage_privilege": True}
            for a in accounts
        ]
    }


def _add_contact_way(world: World, call: Call) -> dict[str, Any]:
    account = world.account(call.body.get("open_kfid"))
    scene = call.body.get("scene", "")
    if not isinstance(scene, str) or len(scene) > 32:
        raise SimError(40058, "'scene'")
    account.contact_way_scenes.add(scene)
    suffix = f"?enc_scene=ENC{scene}" if scene else ""
    return {"url": f"https://work.weixin.qq.com/kf/kfc{account.open_kfid[2:14]}{suffix}"}


def _servicer_list(world: World, call: Call) -> dict[str, Any]:
    account = world.account(call.query.get("open_kfid"))
    return {
        "servicer_list": [
            {"userid": u, "status": world.members[u].status, "stop_type": world.members[u].stop_type}
            for u in account.servicers
        ]
    }


def _servicer_change(add: bool) -> Handler:
    def handler(world: World, call: Call) -> dict[str, Any]:
        account = world.account(call.body.get("open_kfid"))
        userids = call.body.get("userid_list") or []
        if not isinstance(userids, list) or not userids or len(userids) > 100:
            raise SimError(40058, "'userid_list'")
        results = []
        for userid in userids:
            if userid not in world.members:
                results.append({"userid": userid, "errcode": 60111, "errmsg": errmsg_text(60111)})
                continue
            present = userid in account.servicers
            if add and not present:
                account.servicers.append(userid)
            elif not add and present:
                account.servicers.remove(userid)
            changed = present != add
            results.append({"userid": userid, "errcode": 0, "errmsg": "success" if changed else "ignored"})
        return {"result_list": results}

    return handler


def _customer_batchget(world: World, call: Call) -> dict[str, Any]:
    ids = call.body.get("external_userid_list")
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
        raise SimError(40058, "'external_userid_list' 1..100")
    with_context = bool(call.body.get("need_enter_session_context"))
    now = world.clock.now()
    found, invalid = [], []
    for eu in ids:
        customer = world.customers.get(eu) if isinstance(eu, str) else None
        if customer is None:
            invalid.append(eu)
            continue
        row: dict[str, Any] = {
            "external_userid": customer.external_userid,
            "nickname": customer.nickname,
            "avatar": "",
            "gender": customer.gender,
            "unionid": customer.unionid,
        }
        if with_context:
            # §8: "48小时内最后一次进入会话的上下文".
            latest = max(customer.enter_context.values(), key=lambda c: c["at"], default=None)
            fresh = latest is not None and now - latest["at"] < 48 * 3600
            row["enter_session_context"] = (
                {"scene": latest["scene"], "scene_param": latest["scene_param"]} if latest and fresh else {}
            )
        found.append(row)
    return {"customer_list": found, "invalid_external_userid": invalid}


def _state_get(world: World, call: Call) -> dict[str, Any]:
    return world.service_state_get(call.body.get("open_kfid"), call.body.get("external_userid"))


def _state_trans(world: World, call: Call) -> dict[str, Any]:
    b = call.body
    code = world.service_state_trans(
        b.get("open_kfid"), b.get("external_userid"), b.get("service_state"), b.get("servicer_userid")
    )
    return {"msg_code": code} if code else {}


def _sync_msg(world: World, call: Call) -> dict[str, Any]:
    return world.sync_msg(call.body)


def _send_msg(world: World, call: Call) -> dict[str, Any]:
    return {"msgid": world.send_msg(call.body)}


def _send_msg_on_event(world: World, call: Call) -> dict[str, Any]:
    return {"msgid": world.send_msg_on_event(call.body)}


def _media_upload(world: World, call: Call) -> dict[str, Any]:
    if call.upload is None:
        raise SimError(44001)  # §8: multipart field `media`
    filename, content_type, data = call.upload
    media = world.media_upload(call.query.get("type"), filename, content_type, data)
    # §8: created_at is a string; errmsg may be "" on success.
    return {"type": media.type, "media_id": media.media_id, "created_at": str(int(media.created_at))}


def _media_get(world: World, call: Call) -> Response:
    media = world.media_get(call.query.get("media_id"))
    return Response(
        media.data,
        media_type=media.content_type or "application/octet-stream",
        headers={
            # HTTP headers are Latin-1: a Chinese name travels percent-encoded (clients unquote it).
            "Content-disposition": f'attachment; filename="{quote(media.filename)}"',
            "Cache-Control": "no-cache, must-revalidate",
        },
    )


def _upgrade_config(world: World, call: Call) -> dict[str, Any]:
    # wecom-api §8: a GET; department_id_list is kept empty (the simulator has no departments).
    return {
        "member_range": {"userid_list": list(world.upgrade_members), "department_id_list": []},
        "groupchat_range": {"chat_id_list": list(world.upgrade_groupchats)},
    }


def _upgrade_service(world: World, call: Call) -> dict[str, Any]:
    world.upgrade_service(call.body)
    return {}


def _cancel_upgrade_service(world: World, call: Call) -> dict[str, Any]:
    world.cancel_upgrade_service(call.body)
    return {}


def _message_send(world: World, call: Call) -> dict[str, Any]:
    assert call.app is not None
    return contact.app_message_send(world, call.app.agent_id, call.body)


def _ec_list(world: World, call: Call) -> dict[str, Any]:
    return {"external_userid": contact.external_contact_list(world, call.query.get("userid"))}


def _ec_get(world: World, call: Call) -> dict[str, Any]:
    return contact.external_contact_get(world, call.query.get("external_userid"))


def _wrap(fn: Callable[[World, dict[str, Any]], dict[str, Any] | None]) -> Handler:
    def handler(world: World, call: Call) -> dict[str, Any]:
        return fn(world, call.body) or {}

    return handler


GET = frozenset({"GET"})
GET_OR_POST = frozenset({"GET", "POST"})

APIS: dict[str, Api] = {
    "gettoken": Api(_gettoken, GET, scope=""),
    "kf/account/add": Api(_account_add),
    "kf/account/del": Api(_account_del),
    "kf/account/update": Api(_account_update),
    "kf/account/list": Api(_account_list, GET_OR_POST),
    "kf/add_contact_way": Api(_add_contact_way),
    "kf/servicer/list": Api(_servicer_list, GET),
    "kf/servicer/add": Api(_servicer_change(add=True)),
    "kf/servicer/del": Api(_servicer_change(add=False)),
    "kf/customer/batchget": Api(_customer_batchget),
    "kf/service_state/get": Api(_state_get),
    "kf/service_state/trans": Api(_state_trans),
    "kf/customer/get_upgrade_service_config": Api(_upgrade_config, GET),
    "kf/customer/upgrade_service": Api(_upgrade_service),
    "kf/customer/cancel_upgrade_service": Api(_cancel_upgrade_service),
    "kf/sync_msg": Api(_sync_msg),
    "kf/send_msg": Api(_send_msg),
    "kf/send_msg_on_event": Api(_send_msg_on_event),
    "media/upload": Api(_media_upload, scope=None),
    "media/get": Api(_media_get, GET, scope=None),
    "message/send": Api(_message_send, scope="message"),
    "externalcontact/list": Api(_ec_list, GET, scope="contact"),
    "externalcontact/get": Api(_ec_get, GET, scope="contact"),
    "externalcontact/add_msg_template": Api(_wrap(contact.add_msg_template), scope="contact"),
    "externalcontact/get_groupmsg_list_v2": Api(_wrap(contact.get_groupmsg_list_v2), scope="contact"),
    "externalcontact/get_groupmsg_task": Api(_wrap(contact.get_groupmsg_task), scope="contact"),
    "externalcontact/get_groupmsg_send_result": Api(_wrap(contact.get_groupmsg_send_result), scope="contact"),
    "externalcontact/remind_groupmsg_send": Api(_wrap(contact.remind_groupmsg_send), scope="contact"),
    "externalcontact/cancel_groupmsg_send": Api(_wrap(contact.cancel_groupmsg_send), scope="contact"),
}

_SECRET_PARAMS = frozenset({"access_token", "corpsecret"})


# -- control API bodies --------------------------------------------------------------------------


class NewCustomer(BaseModel):
    nickname: str = "客户"
    external_userid: str | None = None


class Enter(BaseModel):
    open_kfid: str
    scene: str = ""
    scene_param: str = ""


class CustomerMessage(BaseModel):
    open_kfid: str
    msgtype: str = "text"
    content: str | None = Field(None, description="shortcut for msgtype=text")
    body: dict[str, Any] | None = Field(None, description="the msgtype's body, e.g. {'media_id': …}")
    future: bool = Field(False, description="allow a msgtype WeCom does not have (yet)")


class CustomerMedia(BaseModel):
    type: str = Field(description="image | voice | video | file")
    filename: str
    content_type: str = "application/octet-stream"
    data_base64: str


class MenuClick(BaseModel):
    open_kfid: str
    menu_id: str


class NewAccount(BaseModel):
    name: str
    routing: RoutingMode = RoutingMode.API
    servicers: list[str] = Field(default_factory=list)


class UpgradeConfig(BaseModel):
    members: list[str] = Field(default_factory=list)
    groupchats: list[str] = Field(default_factory=list)


class Recall(BaseModel):
    open_kfid: str
    msgid: str


class SessionRef(BaseModel):
    open_kfid: str
    external_userid: str


class ServicerAct(SessionRef):
    servicer_userid: str


class ServicerMessage(ServicerAct):
    content: str


class ForceState(SessionRef):
    service_state: int
    servicer_userid: str = ""


class FailMessage(SessionRef):
    msgid: str
    fail_type: int = 0


class ServicerStatus(BaseModel):
    status: int = Field(ge=0, le=1, description="0 接待中, 1 停止接待")
    stop_type: int = Field(0, ge=0, le=1, description="0 停止接待, 1 暂时挂起")


class Routing(BaseModel):
    mode: RoutingMode


class Advance(BaseModel):
    seconds: float = Field(ge=0)


class Invalidate(BaseModel):
    app: str | None = None


class CallbackUrl(BaseModel):
    url: str | None = None
    urls: list[str] | None = Field(None, description="several receivers (replicas): attempts go round")


class Wait(BaseModel):
    timeout: float = Field(10.0, gt=0, le=120)


class ContactLink(BaseModel):
    userid: str
    external_userid: str


class Confirm(BaseModel):
    userid: str


# -- the app -------------------------------------------------------------------------------------


def world_summary(world: World, callback_url: str | None) -> dict[str, Any]:
    """Everything a client needs to point at the simulator, secrets included (it is a simulator)."""
    return {
        "corp_id": world.corp_id,
        "callback_token": world.callback_token,
        "encoding_aes_key": world.encoding_aes_key,
        "callback_url": callback_url,
        "apps": {
            a.name: {"secret": a.secret, "agent_id": a.agent_id, "scopes": sorted(a.scopes)}
            for a in world.apps.values()
        },
        "accounts": [
            {"open_kfid": a.open_kfid, "name": a.name, "routing": a.routing.value, "servicers": a.servicers}
            for a in world.accounts.values()
        ],
        "members": [
            {"userid": m.userid, "name": m.name, "status": m.status, "external_contacts": m.external_contacts}
            for m in world.members.values()
        ],
        "customers": [
            {"external_userid": c.external_userid, "nickname": c.nickname} for c in world.customers.values()
        ],
    }


def create_simulator_app(world: World, *, callback_url: str | None) -> FastAPI:
    """Serve `world` over WeCom's HTTP shapes; post callbacks to `callback_url` when set."""
    faults = FaultBook()
    dispatcher = CallbackDispatcher(world, faults, callback_url)
    calls: deque[dict[str, Any]] = deque(maxlen=world.behaviour.log_capacity)
    seq = 0

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await dispatcher.start()
        world.on_callback = dispatcher.schedule
        try:
            yield
        finally:
            world.on_callback = None
            await dispatcher.aclose()

    app = FastAPI(title="wxkf WeCom simulator", lifespan=lifespan)
    app.state.world = world
    app.state.dispatcher = dispatcher
    app.state.faults = faults

    def client_ip(request: Request) -> str:
        return request.client.host if request.client else "127.0.0.1"

    async def read_call(request: Request, query: dict[str, str]) -> Call:
        body: dict[str, Any] = {}
        upload = None
        if request.method == "POST":
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                form = await request.form()
                media = form.get("media")
                if isinstance(media, UploadFile):
                    upload = (media.filename or "media", media.content_type or "", await media.read())
                await form.close()
            else:
                raw = await request.body()
                if raw:
                    try:
                        parsed = json.loads(raw)
                    except ValueError as exc:
                        raise SimError(40058, "json invalid") from exc  # §7.2: json不合法
                    if not isinstance(parsed, dict):
                        raise SimError(40058, "json must be an object")
                    body = parsed
        return Call(query, body, None, upload)

    @app.api_route("/cgi-bin/{path:path}", methods=["GET", "POST"], include_in_schema=False)
    async def cgi(path: str, request: Request) -> Response:
        nonlocal seq
        started = time.perf_counter()
        api = APIS.get(path)
        if api is None:
            # §7.3: WeCom answers HTTP 200 with an errcode for any path, one it does not know included.
            code = world.behaviour.unknown_api_errcode
            return JSONResponse(
                error_body(code, f"/cgi-bin/{path}", now=world.clock.now(), client_ip=client_ip(request))
            )
        effect = faults.pick(path, world.rng)
        if effect.delay_ms:
            await asyncio.sleep(effect.delay_ms / 1000)
        query = dict(request.query_params)
        if effect.invalidate_token:
            used = world.tokens.get(query.get("access_token", ""))
            if used is not None:
                world.invalidate_tokens(used.app.name)  # §7.4: "提前使access_token失效"
        call: Call | None = None
        result: dict[str, Any] | Response
        try:
            call = await read_call(request, query)
            if request.method not in api.methods:
                raise SimError(40058, f"use {'/'.join(sorted(api.methods))}")  # §7.2: POST用成GET
            if effect.errcode is not None:
                raise SimError(effect.errcode)
            if api.scope != "":
                call.app = world.authorize(query.get("access_token"), api.scope)
            result = api.handler(world, call)
            errcode = 0
        except SimError as exc:
            errcode = exc.errcode
            result = error_body(exc.errcode, exc.detail, now=world.clock.now(), client_ip=client_ip(request))
        seq += 1
        calls.append(
            {
                "seq": seq,
                "at": world.clock.now(),
                "api": path,
                "method": request.method,
                "query": {k: v for k, v in query.items() if k not in _SECRET_PARAMS},
                "body": call.body if call else {},
                "errcode": errcode,
                "fault": effect.first,
                "faults": effect.fired,
                "ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )
        if isinstance(result, Response):
            return result
        if errcode == 0:
            result = {"errcode": 0, "errmsg": "" if path == "media/upload" else "ok", **result}
        return JSONResponse(result)

    @app.exception_handler(SimError)
    async def control_error(request: Request, exc: SimError) -> JSONResponse:
        return JSONResponse(
            {"errcode": exc.errcode, "errmsg": errmsg_text(exc.errcode, exc.detail)}, status_code=400
        )

    # -- control API ----------------------------------------------------------------------------

    @app.get("/sim/ping")
    async def ping() -> Response:
        """A bare endpoint on the same server: the baseline of the benchmark."""
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    @app.get("/sim/world")
    async def get_world() -> dict[str, Any]:
        return world_summary(world, dispatcher.url)

    @app.post("/sim/reset")
    async def reset() -> dict[str, Any]:
        world.reset()
        faults.clear()
        calls.clear()
        dispatcher.attempts.clear()
        return {"ok": True}

    @app.get("/sim/behaviour")
    async def get_behaviour() -> dict[str, Any]:
        return world.behaviour.model_dump()

    @app.patch("/sim/behaviour")
    async def patch_behaviour(patch: dict[str, Any]) -> dict[str, Any]:
        try:
            world.behaviour = Behaviour.model_validate({**world.behaviour.model_dump(), **patch})
        except ValueError as exc:
            raise SimError(40058, str(exc)) from None
        return world.behaviour.model_dump()

    @app.put("/sim/callback_url")
    async def set_callback_url(body: CallbackUrl) -> dict[str, Any]:
        dispatcher.urls = body.urls if body.urls is not None else [body.url] if body.url else []
        return {"callback_url": dispatcher.url, "callback_urls": dispatcher.urls}

    @app.post("/sim/customers")
    async def new_customer(body: NewCustomer) -> dict[str, Any]:
        customer = world.add_customer(body.nickname, body.external_userid)
        return {"external_userid": customer.external_userid, "nickname": customer.nickname}

    @app.post("/sim/customers/{external_userid}/enter")
    async def enter(external_userid: str, body: Enter) -> dict[str, Any]:
        return world.customer_enters(body.open_kfid, external_userid, body.scene, body.scene_param)

    @app.post("/sim/customers/{external_userid}/messages")
    async def customer_message(external_userid: str, body: CustomerMessage) -> dict[str, Any]:
        payload = body.body if body.body is not None else {"content": body.content or ""}
        return world.customer_sends(
            body.open_kfid, external_userid, body.msgtype, payload, future=body.future
        )

    @app.post("/sim/customers/{external_userid}/menu_click")
    async def menu_click(external_userid: str, body: MenuClick) -> dict[str, Any]:
        return world.customer_clicks(body.open_kfid, external_userid, body.menu_id)

    @app.post("/sim/media")
    async def customer_media(body: CustomerMedia) -> dict[str, Any]:
        """A file a customer sends: kept as a 3-day media_id, served by media/get (§8)."""
        try:
            data = base64.b64decode(body.data_base64, validate=True)
        except ValueError as exc:
            raise SimError(40058, "'data_base64'") from exc
        media = world.media_upload(body.type, body.filename, body.content_type, data)
        return {"media_id": media.media_id, "type": media.type, "created_at": media.created_at}

    @app.post("/sim/accounts")
    async def add_account(body: NewAccount) -> dict[str, Any]:
        """Another kf account (as 微信客服 → 创建账号 in the admin console), served by `servicers`."""
        account = world.add_account(body.name, body.routing)
        for userid in body.servicers:
            world.member(userid)
            account.servicers.append(userid)
        return {"open_kfid": account.open_kfid, "name": account.name, "servicers": account.servicers}

    @app.put("/sim/upgrade_config")
    async def upgrade_config(body: UpgradeConfig) -> dict[str, Any]:
        """微信客服 → 升级服务 in the admin console: the members and customer groups on offer."""
        world.upgrade_members, world.upgrade_groupchats = list(body.members), list(body.groupchats)
        return {"members": world.upgrade_members, "groupchats": world.upgrade_groupchats}

    @app.post("/sim/console/callback")
    async def save_callback_url(body: CallbackUrl) -> dict[str, Any]:
        """Saving the callback URL in the admin console: WeCom first sends the signed GET with an
        echostr (§1.4) and saves the URL only when the decrypted echostr comes back within 1 s."""
        if body.url:
            await dispatcher.verify_url(body.url)
        dispatcher.urls = [body.url] if body.url else []
        return {"callback_url": body.url, "verified": bool(body.url)}

    @app.post("/sim/customers/{external_userid}/recall")
    async def recall(external_userid: str, body: Recall) -> dict[str, Any]:
        return world.customer_recalls(body.open_kfid, external_userid, body.msgid)

    @app.get("/sim/customers/{external_userid}/received")
    async def received(external_userid: str, open_kfid: str | None = None) -> list[dict[str, Any]]:
        rows = world.customer(external_userid).received
        return [r for r in rows if open_kfid is None or r.get("open_kfid") == open_kfid]

    @app.get("/sim/sessions")
    async def get_session(open_kfid: str, external_userid: str) -> dict[str, Any]:
        world.account(open_kfid)
        world.customer(external_userid)
        s = world.session(open_kfid, external_userid)
        window_end = (
            (s.last_customer_msg_at + world.behaviour.send_window) if s.last_customer_msg_at else None
        )
        return {
            "open_kfid": open_kfid,
            "external_userid": external_userid,
            "service_state": s.state,
            "servicer_userid": s.servicer_userid,
            "budget_left": s.budget_left,
            "window_ends_at": window_end,
            "upgrade": s.upgrade,
        }

    @app.put("/sim/sessions/state")
    async def force_state(body: ForceState) -> dict[str, Any]:
        s = world.force_state(body.open_kfid, body.external_userid, body.service_state, body.servicer_userid)
        return {"service_state": s.state, "servicer_userid": s.servicer_userid}

    @app.post("/sim/sessions/take")
    async def take(body: ServicerAct) -> dict[str, Any]:
        return world.servicer_takes(body.open_kfid, body.external_userid, body.servicer_userid)

    @app.post("/sim/sessions/transfer")
    async def transfer(body: ServicerAct) -> dict[str, Any]:
        return world.servicer_transfers(body.open_kfid, body.external_userid, body.servicer_userid)

    @app.post("/sim/sessions/end")
    async def end(body: SessionRef) -> dict[str, Any]:
        return world.servicer_ends(body.open_kfid, body.external_userid)

    @app.post("/sim/sessions/servicer_message")
    async def servicer_message(body: ServicerMessage) -> dict[str, Any]:
        return world.servicer_sends(body.open_kfid, body.external_userid, body.servicer_userid, body.content)

    @app.post("/sim/messages/fail")
    async def fail_message(body: FailMessage) -> dict[str, Any]:
        customer = world.customer(body.external_userid)
        record = next(
            (
                r
                for r in customer.received
                if r.get("msgid") == body.msgid and r.get("open_kfid") == body.open_kfid
            ),
            None,
        )
        if record is None:
            raise SimError(40058, f"'msgid' {body.msgid} not received by {body.external_userid}")
        world.fail_message(record, customer, body.fail_type)
        return record

    @app.put("/sim/servicers/{userid}/status")
    async def servicer_status(userid: str, body: ServicerStatus) -> dict[str, Any]:
        world.set_servicer_status(userid, body.status, body.stop_type)
        return {"userid": userid, "status": body.status, "stop_type": body.stop_type}

    @app.put("/sim/accounts/{open_kfid}/routing")
    async def routing(open_kfid: str, body: Routing) -> dict[str, Any]:
        world.account(open_kfid).routing = body.mode
        return {"open_kfid": open_kfid, "mode": body.mode.value}

    @app.post("/sim/accounts/{open_kfid}/cursors/invalidate")
    async def invalidate_cursors(open_kfid: str) -> dict[str, Any]:
        world.invalidate_cursors(open_kfid)
        return {"open_kfid": open_kfid}

    @app.get("/sim/clock")
    async def clock() -> dict[str, Any]:
        return world.clock.state()

    @app.post("/sim/clock/advance")
    async def advance(body: Advance) -> dict[str, Any]:
        world.clock.advance(body.seconds)
        return world.clock.state()

    @app.post("/sim/clock/freeze")
    async def freeze() -> dict[str, Any]:
        world.clock.freeze()
        return world.clock.state()

    @app.post("/sim/clock/unfreeze")
    async def unfreeze() -> dict[str, Any]:
        world.clock.unfreeze()
        return world.clock.state()

    @app.post("/sim/tokens/invalidate")
    async def invalidate(body: Invalidate) -> dict[str, Any]:
        return {"invalidated": world.invalidate_tokens(body.app)}

    @app.get("/sim/faults")
    async def list_faults() -> list[dict[str, Any]]:
        return [f.model_dump() for f in faults.list()]

    @app.post("/sim/faults")
    async def add_fault(body: Fault) -> dict[str, Any]:
        return faults.add(body).model_dump()

    @app.delete("/sim/faults")
    async def clear_faults() -> dict[str, Any]:
        faults.clear()
        return {"ok": True}

    @app.get("/sim/calls")
    async def list_calls(api: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        return [c for c in calls if c["seq"] > since and (api is None or c["api"] == api)]

    @app.get("/sim/callbacks")
    async def list_callbacks() -> list[dict[str, Any]]:
        return list(dispatcher.attempts)

    @app.post("/sim/callbacks/wait")
    async def wait_callbacks(body: Wait) -> dict[str, Any]:
        return {"idle": await dispatcher.wait_idle(body.timeout), "attempts": len(dispatcher.attempts)}

    @app.post("/sim/contacts")
    async def add_contact(body: ContactLink) -> dict[str, Any]:
        world.add_external_contact(body.userid, body.external_userid)
        return {"userid": body.userid, "external_contacts": world.members[body.userid].external_contacts}

    @app.delete("/sim/contacts")
    async def remove_contact(body: ContactLink) -> dict[str, Any]:
        world.remove_external_contact(body.userid, body.external_userid)
        return {"userid": body.userid, "external_contacts": world.members[body.userid].external_contacts}

    @app.post("/sim/group_msgs/{msgid}/confirm")
    async def confirm(msgid: str, body: Confirm) -> dict[str, Any]:
        return contact.confirm_group_msg(world, msgid, body.userid)

    @app.get("/sim/members/{userid}/app_messages")
    async def app_messages(userid: str) -> list[dict[str, Any]]:
        return world.member(userid).app_messages

    return app
