"""A small scripted WeCom over real HTTP for the client tests (not the simulator: no world model).

`FakeWeCom` records every call, issues access_tokens from gettoken, refuses unknown or revoked
tokens like WeCom does (40014 / 42001), answers each endpoint with the documented example JSON, and
lets a test queue replies per path: a dict (JSON), or `Reply` for a status, raw body, or delay.
`serve(fake)` runs it with uvicorn in a thread on 127.0.0.1, port chosen by the OS.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SECRET = "s3cr3t-CorpSecret-value-0123456789abcdef"
CORP_ID = "ww0123456789abcdef"
KFID = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q"
USER = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw"


@dataclass
class Reply:
    body: bytes | dict[str, Any] = b""
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str]
    json: Any
    files: dict[str, tuple[str, bytes, str]]


EXAMPLES: dict[str, dict[str, Any]] = {
    # The documented success bodies (wecom-api §3–§9).
    "/cgi-bin/kf/sync_msg": {
        "errcode": 0,
        "errmsg": "ok",
        "next_cursor": "4gw7MepFLfgF2VC5npN",
        "has_more": 1,
        "msg_list": [
            {
                "msgid": "from_msgid_4622416642169452483",
                "open_kfid": "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q",
                "external_userid": "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw",
                "send_time": 1615478585,
                "origin": 3,
                "msgtype": "text",
                "text": {"content": "你好", "menu_id": "101"},
            },
            {
                "msgid": "from_msgid_2",
                "open_kfid": "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q",
                "external_userid": "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw",
                "send_time": 1615478586,
                "origin": 5,
                "servicer_userid": "Zhangsan",
                "msgtype": "image",
                "image": {"media_id": "2iSLeVyqzk4eX0IB5kTi9Ljfa2rt9dwfq5WKRQ4Nvvgw"},
            },
            {
                "msgid": "from_msgid_3",
                "send_time": 1615478587,
                "origin": 4,
                "msgtype": "event",
                "event": {
                    "event_type": "enter_session",
                    "open_kfid": "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q",
                    "external_userid": "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw",
                    "scene": "123",
                    "scene_param": "abc",
                    "welcome_code": "aaaaaa",
                    "wechat_channels": {"nickname": "进入会话的视频号名称", "scene": 1},
                },
            },
        ],
    },
    "/cgi-bin/kf/send_msg": {"errcode": 0, "errmsg": "ok", "msgid": "MSG_ID_generated"},
    "/cgi-bin/kf/send_msg_on_event": {"errcode": 0, "errmsg": "ok", "msgid": "MSG_ID_event"},
    "/cgi-bin/kf/service_state/get": {
        "errcode": 0,
        "errmsg": "ok",
        "service_state": 3,
        "servicer_userid": "zhangsan",
    },
    "/cgi-bin/kf/service_state/trans": {"errcode": 0, "errmsg": "ok", "msg_code": "MSG_CODE"},
    "/cgi-bin/kf/account/list": {
        "errcode": 0,
        "errmsg": "ok",
        "account_list": [
            {
                "open_kfid": "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q",
                "name": "咨询客服",
                "avatar": "https://wework.qpic.cn/wwhead/duc2TvpEgSSjibPZlNR6chpx9W3dtd9Ogp8XEmSNKGa6uufMWn2239HUPuwIFoYYZ7Ph580FPvo8/0",
                "manage_privilege": False,
            }
        ],
    },
    "/cgi-bin/kf/servicer/list": {
        "errcode": 0,
        "errmsg": "ok",
        "servicer_list": [{"userid": "zhangsan", "status": 0, "stop_type": 0}, {"department_id": 2}],
    },
    "/cgi-bin/kf/customer/batchget": {
        "errcode": 0,
        "errmsg": "ok",
        "customer_list": [
            {
                "external_userid": "wmxxxxxxxxxxxxxxxxxxxxxx",
                "nickname": "张三",
                "avatar": "http://xxxxx",
                "gender": 1,
                "unionid": "oxasdaosaosdasdasdasd",
                "enter_session_context": {"scene": "123", "scene_param": "abc", "wechat_channels": {}},
            }
        ],
        "invalid_external_userid": ["zhangsan"],
    },
    "/cgi-bin/kf/add_contact_way": {
        "errcode": 0,
        "errmsg": "ok",
        "url": "https://work.weixin.qq.com/kf/kfcbf8f8d07ac7215f?enc_scene=ENCGFSDF567DF",
    },
    "/cgi-bin/media/upload": {
        "errcode": 0,
        "errmsg": "",
        "type": "image",
        "media_id": "1G6nrLmr5EC3MMb_-zK1dDdzmd0p7cNliYu9V5w7o8K0",
        "created_at": "1380000000",
    },
    "/cgi-bin/message/send": {
        "errcode": 0,
        "errmsg": "ok",
        "invaliduser": "userid3",
        "msgid": "xxxx",
        "response_code": "xyzxyz",
    },
    "/cgi-bin/externalcontact/list": {
        "errcode": 0,
        "errmsg": "ok",
        "external_userid": ["woAJ2GCAAAXtWyujaWJHDDGi0mACAAA", "wmqfasd1e1927831291723123109rAAA"],
    },
    "/cgi-bin/externalcontact/get": {
        "errcode": 0,
        "errmsg": "ok",
        "external_contact": {
            "external_userid": "woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA",
            "name": "李四",
            "position": "Manager",
            "avatar": "http://p.qlogo.cn/bizmail/IcsdgagqefergqerhewSdage/0",
            "corp_name": "腾讯",
            "corp_full_name": "腾讯科技有限公司",
            "type": 2,
            "gender": 1,
            "unionid": "ozynqsulJFCZ2z1aYeS8h-nuasdAAA",
        },
        "follow_user": [
            {
                "userid": "rocky",
                "remark": "李部长",
                "description": "对接采购事务",
                "createtime": 1525779812,
                "tags": [
                    {"group_name": "标签分组名称", "tag_name": "标签名称", "tag_id": "etAAA", "type": 1}
                ],
                "remark_corp_name": "腾讯科技",
                "remark_mobiles": ["13800000001"],
                "oper_userid": "rocky",
                "add_way": 1,
                "state": "外联二维码1",
            }
        ],
        "next_cursor": "NEXT_CURSOR",
    },
    "/cgi-bin/externalcontact/add_msg_template": {
        "errcode": 0,
        "errmsg": "ok",
        "fail_list": ["wmqfasd1e1927831123109rBAAAA"],
        "msgid": "msgGCAAAXtWyujaWJHDDGi0mAAAA",
    },
    "/cgi-bin/externalcontact/get_groupmsg_list_v2": {
        "errcode": 0,
        "errmsg": "ok",
        "next_cursor": "CURSOR",
        "group_msg_list": [
            {
                "msgid": "msgGCAAAXtWyujaWJHDDGi0mAAAA",
                "creator": "xxxx",
                "create_time": "1605171726",
                "create_type": 1,
                "text": {"content": "文本消息内容"},
                "attachments": [
                    {"msgtype": "image", "image": {"media_id": "MEDIA_ID", "pic_url": "http://p"}}
                ],
            }
        ],
    },
    "/cgi-bin/externalcontact/get_groupmsg_task": {
        "errcode": 0,
        "errmsg": "ok",
        "next_cursor": "CURSOR",
        "task_list": [{"userid": "zhangsan", "status": 1, "send_time": 1552536375}],
    },
    "/cgi-bin/externalcontact/get_groupmsg_send_result": {
        "errcode": 0,
        "errmsg": "ok",
        "next_cursor": "CURSOR",
        "send_list": [
            {
                "external_userid": "wmqfasd1e19278asdasAAAA",
                "chat_id": "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA",
                "userid": "zhangsan",
                "status": 1,
                "send_time": 1552536375,
            }
        ],
    },
    "/cgi-bin/externalcontact/remind_groupmsg_send": {"errcode": 0, "errmsg": "ok"},
    "/cgi-bin/externalcontact/cancel_groupmsg_send": {"errcode": 0, "errmsg": "ok"},
}
MEDIA_BYTES = b"\x89PNG\r\n\x1a\n-fake-image-bytes"


def wecom_error(errcode: int, text: str) -> dict[str, Any]:
    """An error body in WeCom's errmsg shape (wecom-api §7.3)."""
    return {
        "errcode": errcode,
        "errmsg": f"{text}, hint: [1576065934_28_e0fae07666aa64636023c1fa7e8f49a4], from ip: 9.30.0.138, "
        f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}",
    }


class FakeWeCom:
    def __init__(self, *, expires_in: int = 7200) -> None:
        self.calls: list[Call] = []
        self.expires_in = expires_in
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.before_gettoken: Callable[[], Awaitable[None]] | None = None
        self._scripts: dict[str, deque[Reply | dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.base_url = ""
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])],
        )

    def script(self, path: str, *replies: Reply | dict[str, Any]) -> None:
        """Queue replies for `path`; each call takes one, then the default behaviour resumes."""
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(replies)

    def calls_to(self, path: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.path == path]

    def revoke_all(self) -> None:
        """WeCom revoking tokens early (wecom-api §7.4): the next call with them gets 42001."""
        with self._lock:
            self.revoked.update(self.issued)

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        params = dict(request.query_params)
        body: Any = None
        files: dict[str, tuple[str, bytes, str]] = {}
        if request.method == "POST":
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                async with request.form() as form:
                    for name, value in form.multi_items():
                        if not isinstance(value, str):
                            files[name] = (value.filename or "", await value.read(), value.content_type or "")
            else:
                raw = await request.body()
                body = json.loads(raw) if raw else None
        with self._lock:
            self.calls.append(Call(request.method, path, params, body, files))
            queue = self._scripts.get(path)
            scripted = queue.popleft() if queue else None
        if path == "/cgi-bin/gettoken":
            if self.before_gettoken is not None:
                await self.before_gettoken()
            if scripted is None:
                if params.get("corpid") != CORP_ID or params.get("corpsecret") != SECRET:
                    return JSONResponse(wecom_error(40001, "invalid credential"))
                with self._lock:
                    token = f"TOKEN-{len(self.issued) + 1}-" + "x" * 40
                    self.issued.append(token)
                return JSONResponse(
                    {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.expires_in}
                )
        else:
            token = params.get("access_token", "")
            with self._lock:
                known, revoked = token in self.issued, token in self.revoked
            if revoked:
                return JSONResponse(wecom_error(42001, "access_token expired"))
            if not known:
                return JSONResponse(wecom_error(40014, "invalid access_token"))
        if scripted is not None:
            return await self._render(scripted)
        if path == "/cgi-bin/media/get":
            return Response(
                MEDIA_BYTES,
                media_type="image/png",
                headers={"Content-disposition": f'attachment; filename="{params.get("media_id")}.png"'},
            )
        return JSONResponse(EXAMPLES.get(path, wecom_error(404, "no such api in the fake")))

    @staticmethod
    async def _render(reply: Reply | dict[str, Any]) -> Response:
        if isinstance(reply, dict):
            return JSONResponse(reply)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        content = json.dumps(reply.body).encode() if isinstance(reply.body, dict) else reply.body
        return Response(
            content, status_code=reply.status, media_type=reply.content_type, headers=reply.headers
        )


@contextmanager
def serve(fake: FakeWeCom) -> Iterator[FakeWeCom]:
    """Run `fake` on 127.0.0.1 in a thread; the socket listens before the thread starts, so no wait."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then; without it every
    # response stalls ~40 ms on delayed ACKs (headers and body are written separately).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(fake.app, log_level="error", lifespan="off", timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
