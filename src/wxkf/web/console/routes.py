"""The console's HTTP layer: pages, partials, the event stream and the forms — thin over the modules.

Every route but the login page and the static files needs a session (`current_staff`); every POST
also needs the session's CSRF token and a same-site origin (`posting_staff`); admin pages need the
admin role (`admin`). Refusals are pages or flash messages in words, never a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from wxkf.agent.kb.embedders import EmbeddingError
from wxkf.agent.kb.loaders import LIMITS_TEXT
from wxkf.agent.kb.store import KnowledgeBaseError
from wxkf.clock import local_time
from wxkf.kf.policy import STATE_NAMES
from wxkf.kf.responder import Conversation
from wxkf.media.errors import MediaError
from wxkf.push.eligibility import explain
from wxkf.push.errors import InvalidInput, NotFound, PushError, refuse_nul
from wxkf.push.importing import MAX_IMPORT_BYTES, parse_profiles
from wxkf.push.service import PushService
from wxkf.web.uploads import too_large
from wxkf.wecom.models import MEDIA_MAX_BYTES

from . import audit, knowledge, overview, unanswered
from . import conversations as conv
from . import push as cpush
from .auth import (
    FLASH_COOKIE,
    LOGIN_COOKIE,
    ROLE_NAMES,
    SESSION_COOKIE,
    SESSION_SECONDS,
    ConsoleAuthError,
    Staff,
    add_user,
    authenticate,
    end_sessions,
    list_users,
    new_token,
    same_token,
    set_disabled,
    set_password,
    staff_for_session,
    unlock,
)
from .live import stream
from .state import ConsoleState, console_state

PREFIX = "/console"
TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    # No inline script runs, whatever a customer writes: scripts come from /console/static only.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class NotLoggedIn(Exception):
    """No valid session: pages redirect to the login, everything else answers 401."""


class Refused(Exception):
    """403 in words: a missing CSRF token, another site's form, a page for admins only."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class ConsoleRoute(APIRoute):
    """Adds the console's security headers to every response of its routes, and closes the form's
    uploaded files whatever happened (a form refused for its CSRF token was read all the same)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            try:
                response = await handler(request)
            finally:
                await request.close()
            response.headers.update(SECURITY_HEADERS)
            return response

        return with_headers


router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


# --- rendering ------------------------------------------------------------------------------------


def _local_time(settings_timezone: str) -> Callable[[datetime | None, str], str]:
    """The console's one way to show a time: in the display timezone (CONTACT_TIMEZONE), named once per page."""

    def local(value: datetime | None, fmt: str = "%m-%d %H:%M:%S") -> str:
        return local_time(value, settings_timezone, fmt) or "-"

    return local


_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
_env.globals.update(
    ROLE_NAMES=ROLE_NAMES,
    STATE_NAMES=STATE_NAMES,
    ACTIONS=audit.ACTIONS,
    INTENT_STATUS=cpush.INTENT_STATUS,
    MATCH_STATUS=cpush.MATCH_STATUS,
    MATCH_VIEWS=cpush.MATCH_VIEWS,
    HISTORY_STATUS=cpush.HISTORY_STATUS,
    DELIVERY_STATUS=cpush.DELIVERY_STATUS,
    explain=explain,
)
_env.filters["plainjson"] = lambda value: json.dumps(value, ensure_ascii=False)  # escaped by autoescape


def _state(request: Request) -> ConsoleState:
    return console_state(request.app)


def render(
    request: Request, template: str, staff: Staff | None, *, status: int = 200, **context: Any
) -> HTMLResponse:
    state = _state(request)
    flash = getattr(request.state, "flash", None)
    html = _env.get_template(template).render(
        staff=staff,
        csrf=staff.csrf if staff is not None else context.pop("login_csrf", ""),
        flash=flash,
        local=_local_time(state.settings.contact_timezone),
        timezone=state.settings.contact_timezone,
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path=PREFIX)
    return response


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


async def _redirect(request: Request, to: str, flash: tuple[str, str] | None = None) -> RedirectResponse:
    response = RedirectResponse(to, status_code=303)
    if flash is not None:
        _cookie(response, request, FLASH_COOKIE, (await _state(request).signer()).flash(*flash), 300)
    return response


async def _audited(
    request: Request,
    staff: Staff,
    action: str,
    *,
    target: str,
    to: str,
    message: str,
    detail: dict[str, Any] | None = None,
) -> RedirectResponse:
    """A staff action done: record it in the audit log, then go to `to` with `message` as the flash."""
    async with _state(request).pipeline.pool.connection() as conn:
        await audit.staff_action(conn, staff, action, target=target, detail=detail, ip=_ip(request))
    return await _redirect(request, to, ("ok", message))


def _search(value: str, limit: int = 64) -> str | None:
    """A filter's text from the query string, None when empty; a NUL (which PostgreSQL text cannot
    hold) is dropped: a filter changes nothing, so it is read rather than refused."""
    return value.replace("\x00", "").strip()[:limit] or None


def _ip(request: Request) -> str:
    return request.client.host if request.client is not None else ""


# --- who is asking --------------------------------------------------------------------------------


async def current_staff(request: Request) -> Staff:
    state = _state(request)
    signer = await state.signer()
    session = signer.read_session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise NotLoggedIn()
    async with state.pipeline.pool.connection() as conn:
        staff = await staff_for_session(conn, session)
    if staff is None:
        raise NotLoggedIn()
    if any("\x00" in str(value) for value in request.path_params.values()):
        # No id or name holds U+0000 (PostgreSQL text cannot): nothing to look up.
        raise Refused("没有这个页面或对象 / no such page or item", 404)
    request.state.flash = signer.read_flash(request.cookies.get(FLASH_COOKIE))
    return staff


def same_site(request: Request) -> bool:
    """Whether a POST comes from the console's own pages (Fetch metadata, Origin, Referer)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    host = request.headers.get("host", "")
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value:
            return urlsplit(value).netloc == host
    return True  # not a browser: the CSRF token still has to match


_CSRF_REFUSED = (
    "请求缺少有效的安全令牌（CSRF）或来自其他网站，已拒绝；请刷新页面后重试 / refused: the form's security "
    "token (CSRF) is missing or wrong, or it came from another site. Reload the page and try again"
)


async def posting_staff(request: Request, staff: Annotated[Staff, Depends(current_staff)]) -> Staff:
    if not same_site(request):
        raise Refused(_CSRF_REFUSED)
    token = request.headers.get("x-csrf-token")
    if token is None:
        form = await request.form()
        value = form.get("csrf_token")
        token = value if isinstance(value, str) else None
    if not same_token(staff.csrf, token):
        raise Refused(_CSRF_REFUSED)
    return staff


def _admin_only(staff: Staff) -> Staff:
    if not staff.is_admin:
        raise Refused("此页面仅管理员可用 / this page is for admins only")
    return staff


async def admin(staff: Annotated[Staff, Depends(current_staff)]) -> Staff:
    return _admin_only(staff)


async def posting_admin(staff: Annotated[Staff, Depends(posting_staff)]) -> Staff:
    return _admin_only(staff)


StaffDep = Annotated[Staff, Depends(current_staff)]
PostingDep = Annotated[Staff, Depends(posting_staff)]
AdminDep = Annotated[Staff, Depends(admin)]
PostingAdminDep = Annotated[Staff, Depends(posting_admin)]


async def not_logged_in(request: Request, exc: Exception) -> Response:
    wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
    if wants_page and not request.url.path.endswith(("/rows", "/panel", "/events")):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response: Response = RedirectResponse(f"{PREFIX}/login?next={quote(target)}", status_code=303)
    else:
        response = PlainTextResponse("请先登录 / log in first", status_code=401)
    response.headers.update(SECURITY_HEADERS)
    return response


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    response = HTMLResponse(
        _env.get_template("refused.html").render(message=str(exc), staff=None, csrf="", flash=None, path=""),
        status_code=exc.status,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


HTTP_WORDS = {
    404: "没有这个页面，请检查地址 / no such page: check the address",
    405: "这个地址不接受这种请求 / this address does not take this method",
}


async def http_error(request: Request, exc: Exception) -> Response:
    """A console address with no page (or a method it does not take) answers a page in words, as every
    other refusal does, not FastAPI's English JSON; outside the console FastAPI's answer stays."""
    assert isinstance(exc, StarletteHTTPException)
    path = request.url.path
    if path != PREFIX and not path.startswith(PREFIX + "/"):
        return await http_exception_handler(request, exc)
    message = HTTP_WORDS.get(exc.status_code, f"请求无法完成 / the request failed: {exc.detail}")
    response = await refused(request, Refused(message, exc.status_code))
    response.headers.update(exc.headers or {})  # 405's Allow
    return response


# --- login ----------------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/conversations"


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "") -> Response:
    token = new_token()
    response = render(request, "login.html", None, login_csrf=token, next=_safe_next(next), error="")
    _cookie(response, request, LOGIN_COOKIE, (await _state(request).signer()).login_token(token), 3600)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    state = _state(request)
    signer = await state.signer()
    expected = signer.read_login_token(request.cookies.get(LOGIN_COOKIE))
    if not same_site(request) or expected is None or not same_token(expected, csrf_token):
        raise Refused(_CSRF_REFUSED)
    async with state.pipeline.pool.connection() as conn:
        try:
            result = await authenticate(conn, username, password)
        except ConsoleAuthError as exc:
            await audit.record(
                conn, user_id=None, username=username.strip()[:64], action="login_failed", ip=_ip(request)
            )
            return render(
                request,
                "login.html",
                None,
                status=401,
                login_csrf=expected,
                next=_safe_next(next),
                error=str(exc),
                username=username,
            )
        await audit.record(
            conn, user_id=result.user_id, username=result.username, action="login", ip=_ip(request)
        )
    assert result.user_id is not None  # authenticate raises otherwise
    response = RedirectResponse(_safe_next(next), status_code=303)
    _cookie(response, request, SESSION_COOKIE, signer.session(result.user_id, result.epoch), SESSION_SECONDS)
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


@router.post("/logout")
async def logout(request: Request, staff: PostingDep) -> Response:
    async with _state(request).pipeline.pool.connection() as conn:
        await end_sessions(conn, staff.id)
        await audit.staff_action(conn, staff, "logout", ip=_ip(request))
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get("")
async def home(staff: StaffDep) -> Response:
    return RedirectResponse(f"{PREFIX}/conversations", status_code=303)


# --- conversations --------------------------------------------------------------------------------


def list_filters(
    needs_human: str = "", paused: str = "", state: str = "", account: str = "", q: str = ""
) -> conv.Filters:
    """The conversation list's filters from the query string; anything unknown is ignored."""
    return conv.Filters(
        needs_human=needs_human == "1",
        paused=paused == "1",
        state=int(state) if state.isdigit() and int(state) in STATE_NAMES else None,
        account=_search(account) or "",
        query=_search(q, 100) or "",
    )


FiltersDep = Annotated[conv.Filters, Depends(list_filters)]


async def _rows(request: Request, filters: conv.Filters) -> list[conv.ConversationRow]:
    state = _state(request)
    async with state.pipeline.pool.connection() as conn:
        rows = await conv.list_conversations(conn, filters)
    if await state.learn_nicknames([r.external_userid for r in rows if not r.nickname]):
        async with state.pipeline.pool.connection() as conn:
            rows = await conv.list_conversations(conn, filters)
    return rows


@router.get("/conversations", response_class=HTMLResponse)
async def conversations_page(request: Request, staff: StaffDep, filters: FiltersDep) -> Response:
    console = _state(request)
    async with console.pipeline.pool.connection() as conn:
        accounts = await conv.accounts_seen(conn)
    return render(
        request,
        "conversations.html",
        staff,
        rows=await _rows(request, filters),
        filters=filters,
        accounts=accounts,
        account_names=await console.account_names(),
    )


@router.get("/conversations/rows", response_class=HTMLResponse)
async def conversation_rows(request: Request, staff: StaffDep, filters: FiltersDep) -> Response:
    rows = await _rows(request, filters)
    names = await _state(request).account_names()
    return render(request, "_rows.html", staff, rows=rows, account_names=names)


@router.get("/events")
async def events(request: Request, staff: StaffDep) -> Response:
    return StreamingResponse(
        stream(_state(request).feed),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )


def _conversation_url(conversation: Conversation) -> str:
    return (
        f"{PREFIX}/c/{quote(conversation.open_kfid, safe='')}/{quote(conversation.external_userid, safe='')}"
    )


async def _panel_context(request: Request, conversation: Conversation, staff: Staff) -> dict[str, Any]:
    pool = _state(request).pipeline.pool
    async with pool.connection() as conn:
        row = await conv.one_conversation(conn, conversation)
        entries = await conv.transcript(conn, conversation)
        held = await conv.holder(conn, conversation)
    return {
        "row": row,
        "entries": entries,
        "holder": held,
        "mine": held is not None and held.user_id == staff.id,
        "blocked": row.reply_blocked if row is not None else "",
        "conversation": conversation,
        "url": _conversation_url(conversation),
    }


@router.get("/c/{open_kfid}/{external_userid}", response_class=HTMLResponse)
async def conversation_page(
    request: Request, open_kfid: str, external_userid: str, staff: StaffDep
) -> Response:
    conversation = Conversation(open_kfid, external_userid)
    context = await _panel_context(request, conversation, staff)
    if context["row"] is None:
        return render(
            request, "refused.html", staff, status=404, message="没有这个会话 / no such conversation"
        )
    servicer_error, servicer_list = "", []
    try:
        servicer_list = await conv.servicers(_state(request).pipeline, open_kfid)
    except conv.ConsoleRefusal as exc:
        servicer_error = str(exc)
    return render(
        request,
        "conversation.html",
        staff,
        servicers=servicer_list,
        servicer_error=servicer_error,
        reply_token=secrets.token_hex(12),
        max_text_bytes=conv.MAX_TEXT_BYTES,
        **context,
    )


@router.get("/c/{open_kfid}/{external_userid}/panel", response_class=HTMLResponse)
async def conversation_panel(
    request: Request, open_kfid: str, external_userid: str, staff: StaffDep
) -> Response:
    context = await _panel_context(request, Conversation(open_kfid, external_userid), staff)
    if context["row"] is None:
        return PlainTextResponse("没有这个会话 / no such conversation", status_code=404)
    return render(request, "_panel.html", staff, **context)


async def _act(
    request: Request,
    open_kfid: str,
    external_userid: str,
    action: Callable[[Conversation], Awaitable[Any]],
    done: str,
) -> Response:
    """Do a staff action on a conversation and go back to it, with what happened (or why not) in words."""
    conversation = Conversation(open_kfid, external_userid)
    url = _conversation_url(conversation)
    try:
        await action(conversation)
    except conv.ConsoleRefusal as exc:
        return await _redirect(request, url, ("error", str(exc)))
    return await _redirect(request, url, ("ok", done))


@router.post("/c/{open_kfid}/{external_userid}/takeover")
async def takeover(request: Request, open_kfid: str, external_userid: str, staff: PostingDep) -> Response:
    pipeline, ip = _state(request).pipeline, _ip(request)
    return await _act(
        request,
        open_kfid,
        external_userid,
        lambda c: conv.take_over(pipeline, c, staff, ip),
        "已接管：机器人暂停回复该客户 / taken over: the bot is paused for this customer",
    )


@router.post("/c/{open_kfid}/{external_userid}/handback")
async def handback(request: Request, open_kfid: str, external_userid: str, staff: PostingDep) -> Response:
    pipeline, ip = _state(request).pipeline, _ip(request)
    return await _act(
        request,
        open_kfid,
        external_userid,
        lambda c: conv.hand_back(pipeline, c, staff, ip),
        "已交还机器人：客户的下一条消息由机器人回答 / handed back to the bot",
    )


@router.post("/c/{open_kfid}/{external_userid}/reply")
async def reply(
    request: Request,
    open_kfid: str,
    external_userid: str,
    staff: PostingDep,
    text: Annotated[str, Form()] = "",
    reply_token: Annotated[str, Form()] = "",
) -> Response:
    pipeline, ip = _state(request).pipeline, _ip(request)
    return await _act(
        request,
        open_kfid,
        external_userid,
        lambda c: conv.reply(pipeline, c, staff, text, reply_token, ip),
        "已加入发送队列 / queued for sending",
    )


@router.post("/c/{open_kfid}/{external_userid}/transfer")
async def transfer(
    request: Request,
    open_kfid: str,
    external_userid: str,
    staff: PostingDep,
    servicer: Annotated[str, Form()] = "",
) -> Response:
    pipeline, ip, userid = _state(request).pipeline, _ip(request), servicer.strip()
    return await _act(
        request,
        open_kfid,
        external_userid,
        lambda c: conv.transfer(pipeline, c, staff, userid, ip),
        f"已转给接待人员 {userid}（state 3）/ transferred to {userid} in WeCom",
    )


@router.post("/c/{open_kfid}/{external_userid}/end")
async def end(request: Request, open_kfid: str, external_userid: str, staff: PostingDep) -> Response:
    pipeline, ip = _state(request).pipeline, _ip(request)
    return await _act(
        request,
        open_kfid,
        external_userid,
        lambda c: conv.end_session(pipeline, c, staff, ip),
        "会话已结束（state 4）/ the session is ended",
    )


# --- knowledge base -------------------------------------------------------------------------------

_KB_ERRORS = (knowledge.KnowledgeRefusal, KnowledgeBaseError, EmbeddingError)


@router.get("/kb", response_class=HTMLResponse)
async def kb_page(request: Request, staff: AdminDep, q: str = "") -> Response:
    state = _state(request)
    preview, error = None, ""
    query = q.strip()[:500]
    if query:
        try:
            preview = await knowledge.preview(state.knowledge, query)
        except _KB_ERRORS as exc:
            error = str(exc)
    async with state.pipeline.pool.connection() as conn:
        documents = await knowledge.documents(conn, state.knowledge)
    return render(
        request, "kb.html", staff, documents=documents, preview=preview, query=query, error=error,
        limits=LIMITS_TEXT,
    )  # fmt: skip


async def _uploads(request: Request) -> list[knowledge.Upload]:
    form = await request.form()
    uploads = []
    try:
        for item in form.getlist("files"):
            if not isinstance(item, str):
                uploads.append(knowledge.Upload(item.filename or "", await item.read()))
    finally:
        await form.close()  # the spooled temporary files
    return uploads


@router.post("/kb/upload")
async def kb_upload(request: Request, staff: PostingAdminDep) -> Response:
    """Streams progress as JSON lines for the page's script; without it, a redirect with the outcome."""
    state = _state(request)
    uploads = await _uploads(request)
    pool_conn = state.pipeline.pool.connection
    if not uploads:
        return await _redirect(request, f"{PREFIX}/kb", ("error", "没有选择文件 / no file chosen"))

    async def add(progress: knowledge.Progress | None) -> str:
        results = await knowledge.add_uploads(pool_conn, state.knowledge, uploads, staff.username, progress)
        async with pool_conn() as conn:
            await audit.staff_action(
                conn,
                staff,
                "kb_upload",
                target="kb",
                detail={
                    "files": [{"source": r.source, "status": r.status, "chunks": r.chunks} for r in results]
                },
                ip=_ip(request),
            )
        return "；".join(f"{r.source}: {knowledge.STATUS[r.status]}（{r.chunks}）" for r in results)

    if "application/x-ndjson" not in request.headers.get("accept", ""):
        try:
            summary = await add(None)
        except _KB_ERRORS as exc:
            return await _redirect(request, f"{PREFIX}/kb", ("error", str(exc)))
        return await _redirect(request, f"{PREFIX}/kb", ("ok", summary))

    async def lines() -> AsyncIterator[bytes]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def progress(stage: str, done: int, total: int) -> None:
            queue.put_nowait({"stage": stage, "done": done, "total": total})

        async def run() -> None:
            try:
                queue.put_nowait({"done_all": True, "summary": await add(progress)})
            except _KB_ERRORS as exc:
                queue.put_nowait({"error": str(exc)})

        task = asyncio.create_task(run())
        try:
            while True:
                item = await queue.get()
                yield (json.dumps(item, ensure_ascii=False) + "\n").encode()
                if "done_all" in item or "error" in item:
                    break
        finally:
            # A closed tab does not cancel the adding half-way: it finishes, and is audited.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/kb/delete")
async def kb_delete(
    request: Request,
    staff: PostingAdminDep,
    document_id: Annotated[str, Form()] = "",
    file_id: Annotated[str, Form()] = "",
) -> Response:
    state = _state(request)
    doc = int(document_id) if document_id.isdigit() else None
    file = int(file_id) if file_id.isdigit() else None
    if doc is not None and file is None:
        async with state.pipeline.pool.connection() as conn:
            file = await knowledge.file_for_document(conn, doc)
    try:
        removed = await knowledge.remove(state.pipeline.pool.connection, state.knowledge, doc, file)
    except _KB_ERRORS as exc:
        return await _redirect(request, f"{PREFIX}/kb", ("error", str(exc)))
    return await _audited(
        request,
        staff,
        "kb_delete",
        target="kb",
        detail={"document_id": doc, "source": removed},
        to=f"{PREFIX}/kb",
        message=f"已删除 / removed: {removed or file_id}",
    )


@router.post("/kb/reindex")
async def kb_reindex(
    request: Request, staff: PostingAdminDep, file_id: Annotated[str, Form()] = ""
) -> Response:
    state = _state(request)
    if not file_id.isdigit():
        return await _redirect(request, f"{PREFIX}/kb", ("error", "没有选择文档 / no document chosen"))
    try:
        result = await knowledge.reindex(state.pipeline.pool.connection, state.knowledge, int(file_id))
    except _KB_ERRORS as exc:
        return await _redirect(request, f"{PREFIX}/kb", ("error", str(exc)))
    return await _audited(
        request,
        staff,
        "kb_reindex",
        target="kb",
        detail={"source": result.source, "chunks": result.chunks},
        to=f"{PREFIX}/kb",
        message=f"已重新索引 / re-indexed: {result.source}（{result.chunks}）",
    )


# --- unanswered questions -------------------------------------------------------------------------


@router.get("/unanswered", response_class=HTMLResponse)
async def unanswered_page(request: Request, staff: AdminDep) -> Response:
    state = _state(request)
    error = ""
    try:
        await unanswered.group_new(state.pipeline.pool, state.embedder)
    except EmbeddingError as exc:
        error = str(exc)
    groups = await unanswered.open_groups(state.pipeline.pool)
    return render(request, "unanswered.html", staff, groups=groups, error=error)


@router.post("/unanswered/{group_id}/entry")
async def unanswered_entry(
    request: Request,
    group_id: int,
    staff: PostingAdminDep,
    question: Annotated[str, Form()] = "",
    answer: Annotated[str, Form()] = "",
) -> Response:
    state = _state(request)
    page = f"{PREFIX}/unanswered"
    if not answer.strip() or not question.strip():
        return await _redirect(
            request, page, ("error", "问题和答案都不能为空 / both the question and the answer are needed")
        )
    try:
        _, asked = await unanswered.group_questions(state.pipeline.pool, group_id)
        markdown = unanswered.entry_markdown(question[:500], answer[:10000], asked)
        result = await knowledge.add_text_entry(
            state.pipeline.pool.connection, state.knowledge, f"问答-{group_id}.md", markdown, staff.username
        )
    except (unanswered.UnansweredRefusal, *_KB_ERRORS) as exc:
        return await _redirect(request, page, ("error", str(exc)))
    await unanswered.resolve(state.pipeline.pool, group_id, result.document_id, staff.username)
    return await _audited(
        request,
        staff,
        "unanswered_entry",
        target="kb",
        detail={"group": group_id, "source": result.source, "question": question[:200]},
        to=page,
        message=f"已加入知识库 / added to the knowledge base: {result.source}（{knowledge.STATUS[result.status]}）",
    )


# --- overview, doctor -----------------------------------------------------------------------------


@router.get("/overview", response_class=HTMLResponse)
async def overview_page(request: Request, staff: AdminDep) -> Response:
    state = _state(request)
    async with state.pipeline.pool.connection() as conn:
        data = await overview.overview(conn, state.settings.contact_timezone, datetime.now(UTC))
    return render(
        request,
        "overview.html",
        staff,
        data=data,
        hourly=overview.hourly_chart(data),
        latency=overview.latency_chart(data),
    )


@router.get("/doctor", response_class=HTMLResponse)
async def doctor_page(request: Request, staff: AdminDep) -> Response:
    from wxkf.ops.doctor import run_doctor

    report = await run_doctor(_state(request).settings)
    return render(request, "doctor.html", staff, report=report)


# --- accounts and the audit log -------------------------------------------------------------------


@router.get("/users", response_class=HTMLResponse)
async def users_page(request: Request, staff: AdminDep) -> Response:
    async with _state(request).pipeline.pool.connection() as conn:
        users = await list_users(conn)
    return render(request, "users.html", staff, users=users, now=datetime.now(UTC))


@router.post("/users")
async def users_add(
    request: Request,
    staff: PostingAdminDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "agent",
) -> Response:
    page = f"{PREFIX}/users"
    async with _state(request).pipeline.pool.connection() as conn:
        try:
            await add_user(conn, username, password, role)
        except ConsoleAuthError as exc:
            return await _redirect(request, page, ("error", str(exc)))
        await audit.staff_action(
            conn,
            staff,
            "user_add",
            target=f"user:{username.strip()}",
            detail={"role": role},
            ip=_ip(request),
        )
    return await _redirect(request, page, ("ok", f"已添加账号 / added: {username.strip()}"))


@router.post("/users/{user_id}/{action}")
async def users_change(
    request: Request,
    user_id: int,
    action: str,
    staff: PostingAdminDep,
    password: Annotated[str, Form()] = "",
) -> Response:
    page = f"{PREFIX}/users"
    changes: dict[str, Callable[[Any], Awaitable[str]]] = {
        "disable": lambda conn: set_disabled(conn, user_id, True, by=staff),
        "enable": lambda conn: set_disabled(conn, user_id, False, by=staff),
        "unlock": lambda conn: unlock(conn, user_id),
        "password": lambda conn: set_password(conn, user_id, password),
    }
    change = changes.get(action)
    if change is None:
        return await _redirect(request, page, ("error", "未知操作 / unknown action"))
    async with _state(request).pipeline.pool.connection() as conn:
        try:
            name = await change(conn)
        except ConsoleAuthError as exc:
            return await _redirect(request, page, ("error", str(exc)))
        await audit.staff_action(
            conn,
            staff,
            f"user_{action}",
            target=f"user:{name}",
            ip=_ip(request),
        )
    return await _redirect(request, page, ("ok", f"{audit.ACTIONS[f'user_{action}']}: {name}"))


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, staff: AdminDep, action: str = "") -> Response:
    async with _state(request).pipeline.pool.connection() as conn:
        entries = await audit.recent(conn, action=action if action in audit.ACTIONS else None)
    return render(request, "audit.html", staff, entries=entries, action=action)


# --- push: intents, matches, history (staff); profiles, templates (admin) -------------------------

_PUSH_REFUSALS = (PushError, MediaError)


def _push(request: Request) -> PushService:
    return _state(request).push


async def _fields(request: Request) -> dict[str, str]:
    """A form's text fields (its files are read apart), without the CSRF token."""
    form = await request.form()
    return {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf_token"}


async def _file(request: Request, name: str, limit: int) -> tuple[bytes, str] | None:
    """An uploaded file's bytes (at most `limit` + 1 are read) and name; None when none was chosen."""
    form = await request.form()
    try:
        item = form.get(name)
        if item is None or isinstance(item, str) or not item.filename:
            return None
        return await item.read(limit + 1), item.filename
    finally:
        await form.close()  # the spooled temporary files


def _problems(exc: Exception) -> list[str]:
    """What a refusal says, line by line: its headline, then one line per bad field or row."""
    headline, *_ = str(exc).split("\n")
    problems = getattr(exc, "problems", None)
    return [headline.rstrip(":"), *problems] if problems else [str(exc)]


def _id(value: str) -> int | None:
    """A path id: digits that fit a bigint, else None (the page says there is no such thing)."""
    return int(value) if value.isdigit() and len(value) <= 18 else None


def _intent_filters(status: str, customer: str) -> dict[str, Any]:
    return {
        "status": status if status in cpush.INTENT_STATUS else None,
        "include_cancelled": status == "all",
        "external_userid": _search(customer),
    }


async def _push_page(
    request: Request,
    staff: Staff,
    *,
    status: str = "",
    customer: str = "",
    form: dict[str, str] | None = None,
    problems: list[str] | None = None,
    code: int = 200,
) -> Response:
    push = _push(request)
    intents = await push.list_intents(limit=cpush.PAGE_ROWS, **_intent_filters(status, customer))
    async with _state(request).pipeline.pool.connection() as conn:
        accounts = await conv.accounts_seen(conn)
    templates = [name for name, _ in await push.list_templates()]
    return render(
        request, "push.html", staff, status=code, intents=intents, filter_status=status,
        customer=customer, accounts=accounts, account_names=await _state(request).account_names(),
        templates=templates, form=form or {}, problems=problems or [],
    )  # fmt: skip


@router.get("/push", response_class=HTMLResponse)
async def push_page(
    request: Request, staff: StaffDep, status: str = "", customer: str = "", account: str = ""
) -> Response:
    """Intents, filtered; `account` and `customer` also fill the form (a link from a conversation)."""
    form = {"open_kfid": account[:64], "external_userid": customer[:64]}
    return await _push_page(request, staff, status=status, customer=customer, form=form)


@router.post("/push/intents")
async def push_intent_add(request: Request, staff: PostingDep) -> Response:
    fields = await _fields(request)
    try:
        intent = await _push(request).create_intent(
            cpush.intent_from_form(fields), created_by=f"console:{staff.username}"
        )
    except _PUSH_REFUSALS as exc:
        return await _push_page(request, staff, form=fields, problems=_problems(exc), code=422)
    return await _audited(
        request,
        staff,
        "push_intent_add",
        target=f"intent:{intent.id}",
        detail={"customer": intent.external_userid, "name": intent.name},
        to=f"{PREFIX}/push/intents/{intent.id}",
        message=f"意图 {intent.id} 已创建，正在匹配 / intent {intent.id} created, matching started",
    )


@router.post("/push/intents/{intent_id}/cancel")
async def push_intent_cancel(request: Request, intent_id: str, staff: PostingDep) -> Response:
    number = _id(intent_id)
    try:
        if number is None:
            raise NotFound(f"没有编号为 {intent_id[:20]} 的意图 / no intent {intent_id[:20]}")
        intent = await _push(request).set_intent_status(number, "cancelled")
    except NotFound as exc:
        return render(request, "refused.html", staff, status=404, message=str(exc))
    return await _audited(
        request,
        staff,
        "push_intent_cancel",
        target=f"intent:{intent.id}",
        detail={"customer": intent.external_userid, "name": intent.name},
        to=f"{PREFIX}/push/intents/{intent.id}",
        message=f"意图 {intent.id} 已取消，未推送的匹配已撤回 / cancelled; undelivered matches retired",
    )


@router.get("/push/intents/{intent_id}", response_class=HTMLResponse)
async def push_intent_page(request: Request, intent_id: str, staff: StaffDep) -> Response:
    number = _id(intent_id)
    try:
        if number is None:
            raise NotFound(f"没有编号为 {intent_id[:20]} 的意图 / no intent {intent_id[:20]}")
        page = await cpush.intent_page(_push(request), number)
    except NotFound as exc:
        return render(request, "refused.html", staff, status=404, message=str(exc))
    return render(request, "push_intent.html", staff, page=page, intent=page.intent)


@router.get("/push/matches", response_class=HTMLResponse)
async def push_matches_page(
    request: Request, staff: StaffDep, view: str = "", customer: str = ""
) -> Response:
    matches = await cpush.matches_in_view(_push(request), view, _search(customer))
    return render(
        request, "push_matches.html", staff, matches=matches, view=view if view in cpush.MATCH_VIEWS else "",
        customer=customer,
    )  # fmt: skip


@router.get("/push/history", response_class=HTMLResponse)
async def push_history_page(
    request: Request, staff: StaffDep, status: str = "", customer: str = ""
) -> Response:
    entries = await _push(request).history(
        status=status if status in cpush.HISTORY_STATUS else None,
        external_userid=_search(customer),
        limit=cpush.PAGE_ROWS,
    )
    return render(
        request, "push_history.html", staff, entries=entries, filter_status=status, customer=customer
    )


async def _profiles_page(
    request: Request,
    staff: Staff,
    *,
    q: str = "",
    form: dict[str, str] | None = None,
    problems: list[str] | None = None,
    problems_for: str = "",
    code: int = 200,
) -> Response:
    profiles = await _push(request).list_profiles(query=_search(q, 100), limit=cpush.PAGE_ROWS)
    return render(
        request, "push_profiles.html", staff, status=code, profiles=profiles, query=q, form=form or {},
        problems=problems or [], problems_for=problems_for, max_mb=MAX_IMPORT_BYTES >> 20,
    )  # fmt: skip


@router.get("/push/profiles", response_class=HTMLResponse)
async def push_profiles_page(request: Request, staff: AdminDep, q: str = "") -> Response:
    return await _profiles_page(request, staff, q=q)


@router.post("/push/profiles")
async def push_profile_add(request: Request, staff: PostingAdminDep) -> Response:
    fields = await _fields(request)
    try:
        profile = await _push(request).create_profile(
            cpush.profile_from_form(fields), created_by=f"console:{staff.username}"
        )
    except _PUSH_REFUSALS as exc:
        return await _profiles_page(
            request, staff, form=fields, problems=_problems(exc), problems_for="add", code=422
        )
    return await _audited(
        request,
        staff,
        "push_profile_add",
        target=f"profile:{profile.id}",
        detail={"name": profile.name},
        to=f"{PREFIX}/push/profiles",
        message=f"资料 {profile.id} 已添加，正在匹配 / profile {profile.id} added, matching started",
    )


@router.post("/push/profiles/import")
async def push_profiles_import(request: Request, staff: PostingAdminDep) -> Response:
    """All rows or none (push.importing): a bad file is listed by line and nothing is written."""
    upload = await _file(request, "file", MAX_IMPORT_BYTES)
    try:
        if upload is None:
            raise InvalidInput(["file: 没有选择文件 / no file chosen"])
        data, filename = upload
        if len(data) > MAX_IMPORT_BYTES:
            raise too_large(MAX_IMPORT_BYTES, filename)
        profiles = parse_profiles(data, filename)
        ids = await _push(request).import_profiles(profiles, created_by=f"console:{staff.username}")
    except _PUSH_REFUSALS as exc:
        return await _profiles_page(request, staff, problems=_problems(exc), problems_for="import", code=422)
    return await _audited(
        request,
        staff,
        "push_profile_import",
        target="profiles",
        detail={"file": filename, "rows": len(profiles), "written": len(ids)},
        to=f"{PREFIX}/push/profiles",
        message=f"已导入 {len(profiles)} 行，{len(ids)} 份资料新增或更新，正在匹配 / imported {len(profiles)} "
        f"rows, {len(ids)} profiles added or changed; matching started",
    )


async def _templates_page(
    request: Request,
    staff: Staff,
    *,
    edit: str = "",
    form: dict[str, str] | None = None,
    problems: list[str] | None = None,
    code: int = 200,
) -> Response:
    templates = await _push(request).list_templates()
    editing = dict(templates).get(edit) if edit else None
    if form is None:
        form = {"name": edit, **editing.model_dump(mode="json")} if editing is not None else {}
    return render(
        request, "push_templates.html", staff, status=code, templates=templates, form=form,
        problems=problems or [], placeholders=cpush.PLACEHOLDERS, editing=editing is not None,
    )  # fmt: skip


@router.get("/push/templates", response_class=HTMLResponse)
async def push_templates_page(request: Request, staff: AdminDep, edit: str = "") -> Response:
    return await _templates_page(request, staff, edit=edit[:64])


@router.post("/push/templates")
async def push_template_save(request: Request, staff: PostingAdminDep) -> Response:
    """Create or change a template (by name); a card's cover goes to the media store."""
    fields = await _fields(request)
    push = _push(request)
    name = fields.get("name", "").strip()
    try:
        cover = await _file(request, "cover", MEDIA_MAX_BYTES["image"])
        template = await cpush.template_from_form(
            push, fields, cover[0] if cover else None, cover[1] if cover else ""
        )
        await push.save_template(name, template)
    except _PUSH_REFUSALS as exc:
        return await _templates_page(request, staff, form=fields, problems=_problems(exc), code=422)
    return await _audited(
        request,
        staff,
        "push_template_save",
        target=f"template:{name}",
        detail={"kind": template.kind},
        to=f"{PREFIX}/push/templates",
        message=f"模板 {name} 已保存 / template {name} saved",
    )


@router.post("/push/templates/delete")
async def push_template_delete(
    request: Request, staff: PostingAdminDep, name: Annotated[str, Form()] = ""
) -> Response:
    try:
        refuse_nul({"name": name})
        await _push(request).delete_template(name)
    except NotFound as exc:
        return render(request, "refused.html", staff, status=404, message=str(exc))
    except InvalidInput as exc:
        return await _templates_page(request, staff, problems=_problems(exc), code=422)
    return await _audited(
        request,
        staff,
        "push_template_delete",
        target=f"template:{name}",
        to=f"{PREFIX}/push/templates",
        message=f"模板 {name} 已删除 / template {name} deleted",
    )
