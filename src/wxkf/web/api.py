"""The REST API under /api/: push intents, profiles, matches, templates, preferences and history.

Every route needs the key in WXKF_API_KEY, sent as `Authorization: Bearer <key>` (or `X-API-Key`);
without WXKF_API_KEY set, the API refuses everything and says so. Interactive docs at /docs
(OpenAPI at /openapi.json). Errors are JSON `{"error": …, "problems": [...]}`, Chinese first; bad
input is a 4xx and changes nothing. The routes are thin: `wxkf.push.service.PushService` does the work.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from wxkf.media.errors import MediaError, MediaNotFound, MediaStoreError
from wxkf.push.errors import (
    ExtractionError,
    ImportRefused,
    InvalidInput,
    NotFound,
    PushError,
    refuse_nul,
    validated,
)
from wxkf.push.models import (
    HistoryEntry,
    Intent,
    IntentIn,
    IntentPatch,
    Match,
    Owner,
    Preferences,
    PreferencesPatch,
    Profile,
    ProfileIn,
    ProfilePatch,
)
from wxkf.push.service import PushService
from wxkf.push.statuses import HistoryStatus, IntentStatus, MatchStatus
from wxkf.push.templates import MiniProgramTemplate, TextTemplate
from wxkf.validation import worded
from wxkf.web.uploads import read_upload
from wxkf.wecom.errors import WeComError


def _push(request: Request) -> PushService:
    push: PushService = request.app.state.push
    return push


def require_key(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    """The API key from WXKF_API_KEY, compared in constant time."""
    configured = request.app.state.settings.wxkf_api_key
    if configured is None or not configured.get_secret_value():
        raise HTTPException(
            401, "接口未启用：设置 WXKF_API_KEY 后重启 / the API is disabled: set WXKF_API_KEY and restart"
        )
    presented = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
    if not presented or not hmac.compare_digest(presented.encode(), configured.get_secret_value().encode()):
        raise HTTPException(
            401, "API key 无效：请求头 Authorization: Bearer <WXKF_API_KEY> / missing or wrong API key"
        )


async def refuse_nul_input(request: Request) -> None:
    """A NUL character in the path, the query or a JSON body is refused (422, the field named) before
    any route runs: PostgreSQL text cannot hold it. Uploaded files are checked by their importer."""
    body: Any = None
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None  # FastAPI refuses a body that is not JSON, in its own words
    refuse_nul(
        {**request.path_params, **request.query_params, **({"body": body} if body is not None else {})}
    )


Push = Annotated[PushService, Depends(_push)]
router = APIRouter(prefix="/api", dependencies=[Depends(require_key), Depends(refuse_nul_input)])
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0)]


def _owner(open_kfid: str | None, external_userid: str | None) -> Owner | None:
    if (open_kfid is None) != (external_userid is None):
        raise InvalidInput(
            ["open_kfid 与 external_userid 须同时给出 / give both open_kfid and external_userid"]
        )
    return (
        Owner(open_kfid=open_kfid, external_userid=external_userid) if open_kfid and external_userid else None
    )


# --- intents --------------------------------------------------------------------------------------


@router.post("/intents", status_code=201, tags=["intents"])
async def create_intent(push: Push, intent: IntentIn) -> Intent:
    """A customer's intent; matching starts at once (job push:match_intent)."""
    return await push.create_intent(intent, created_by="api")


@router.get("/intents", tags=["intents"])
async def list_intents(
    push: Push,
    open_kfid: str | None = None,
    external_userid: str | None = None,
    status: IntentStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[Intent]:
    return await push.list_intents(
        _owner(open_kfid, external_userid), status=status, limit=limit, offset=offset
    )


@router.get("/intents/{intent_id}", tags=["intents"])
async def get_intent(push: Push, intent_id: int) -> Intent:
    return await push.get_intent(intent_id)


@router.patch("/intents/{intent_id}", tags=["intents"])
async def update_intent(push: Push, intent_id: int, patch: IntentPatch) -> Intent:
    """Change an intent: a new version, matched anew."""
    return await push.update_intent(intent_id, patch)


@router.post("/intents/{intent_id}/cancel", tags=["intents"])
async def cancel_intent(push: Push, intent_id: int) -> Intent:
    return await push.set_intent_status(intent_id, "cancelled")


class MatchRunOut(BaseModel):
    scored: int
    recorded: int
    rejected: int
    matches: list[Match]


@router.post("/intents/{intent_id}/match", tags=["intents"])
async def match_intent(push: Push, intent_id: int) -> MatchRunOut:
    """Match now (instead of waiting for the job); returns the intent's matches."""
    run, matches = await push.match_now(intent_id)
    return MatchRunOut(scored=run.scored, recorded=run.recorded, rejected=run.rejected, matches=matches)


# --- profiles -------------------------------------------------------------------------------------


@router.post("/profiles", status_code=201, tags=["profiles"])
async def create_profile(push: Push, profile: ProfileIn) -> Profile:
    return await push.create_profile(profile, created_by="api")


@router.get("/profiles", tags=["profiles"])
async def list_profiles(
    push: Push, q: Annotated[str | None, Query(max_length=100)] = None, limit: Limit = 50, offset: Offset = 0
) -> list[Profile]:
    return await push.list_profiles(query=q, limit=limit, offset=offset)


@router.get("/profiles/{profile_id}", tags=["profiles"])
async def get_profile(push: Push, profile_id: int) -> Profile:
    return await push.get_profile(profile_id)


@router.patch("/profiles/{profile_id}", tags=["profiles"])
async def update_profile(push: Push, profile_id: int, patch: ProfilePatch) -> Profile:
    """Change a profile: a new version, scored again against every intent."""
    return await push.update_profile(profile_id, patch)


@router.delete("/profiles/{profile_id}", tags=["profiles"])
async def delete_profile(push: Push, profile_id: int) -> Profile:
    return await push.set_profile_status(profile_id, "deleted")


class ImportOut(BaseModel):
    rows: int
    written: int


_FILE_FORM = {  # the body read_upload parses, as `File()` would have documented it
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post("/profiles/import", tags=["profiles"], openapi_extra=_FILE_FORM)
async def import_profiles(push: Push, request: Request) -> ImportOut:
    """A .csv or .jsonl file (docs/push.md) in form field `file`, at most MAX_IMPORT_BYTES (refused
    before it is read whole): all rows or none; bad rows are listed by line."""
    from wxkf.push import importing

    upload = await read_upload(request, "file", importing.MAX_IMPORT_BYTES)
    if upload is None:
        raise InvalidInput(["file: 没有上传文件 / no file uploaded"])
    data, filename = upload
    profiles = importing.parse_profiles(data, filename)
    ids = await push.import_profiles(profiles, created_by="api-import")
    return ImportOut(rows=len(profiles), written=len(ids))


class ExtractIn(BaseModel):
    text: Annotated[str, Field(min_length=1, max_length=8000)]


@router.post("/profiles/extract", tags=["profiles"])
async def extract_profile(push: Push, body: ExtractIn) -> ProfileIn:
    """The LLM reads a profile from free text; nothing is saved (POST /api/profiles to save it)."""
    from wxkf.agent.llm import LLMClient
    from wxkf.push.extraction import extract_profile as extract

    llm = LLMClient.from_settings(push.settings)
    if llm is None:
        raise ExtractionError("未配置大模型（LLM_API_KEY），无法提取 / no LLM configured: set LLM_API_KEY")
    try:
        return await extract(llm, body.text)
    finally:
        await llm.aclose()


# --- matches, history, preferences ----------------------------------------------------------------


@router.get("/matches", tags=["matches"])
async def list_matches(
    push: Push,
    intent_id: int | None = None,
    profile_id: int | None = None,
    open_kfid: str | None = None,
    external_userid: str | None = None,
    status: MatchStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[Match]:
    return await push.list_matches(
        owner=_owner(open_kfid, external_userid),
        intent_id=intent_id,
        profile_id=profile_id,
        status=status,
        limit=limit,
        offset=offset,
    )


@router.get("/matches/{match_id}", tags=["matches"])
async def get_match(push: Push, match_id: int) -> Match:
    return await push.get_match(match_id)


class FeedbackIn(BaseModel):
    feedback: Literal["viewed", "not_interested"]


@router.post("/matches/{match_id}/feedback", tags=["matches"])
async def match_feedback(push: Push, match_id: int, body: FeedbackIn) -> Match:
    return await push.feedback(match_id, body.feedback)


@router.get("/history", tags=["history"])
async def history(
    push: Push,
    open_kfid: str | None = None,
    external_userid: str | None = None,
    intent_id: int | None = None,
    status: HistoryStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[HistoryEntry]:
    """Every push decision, with the reason a push was not sent (docs/push.md) and the delivery state."""
    return await push.history(
        owner=_owner(open_kfid, external_userid),
        intent_id=intent_id,
        status=status,
        limit=limit,
        offset=offset,
    )


@router.get("/customers/{open_kfid}/{external_userid}/preferences", tags=["preferences"])
async def get_preferences(push: Push, open_kfid: str, external_userid: str) -> Preferences:
    return await push.preferences(Owner(open_kfid=open_kfid, external_userid=external_userid))


@router.patch("/customers/{open_kfid}/{external_userid}/preferences", tags=["preferences"])
async def set_preferences(
    push: Push, open_kfid: str, external_userid: str, patch: PreferencesPatch
) -> Preferences:
    return await push.set_preferences(Owner(open_kfid=open_kfid, external_userid=external_userid), patch)


# --- templates ------------------------------------------------------------------------------------


class TemplateOut(BaseModel):
    name: str
    template: TextTemplate | MiniProgramTemplate


class MiniProgramTemplateIn(BaseModel):
    """A card template; the cover image is sent as base64 (`thumb_base64`) or reuses a saved `thumb`."""

    kind: Literal["miniprogram"]
    appid: str
    pagepath: str
    title: str | None = None
    merged_pagepath: str | None = None
    merged_title: str | None = None
    thumb: str | None = None
    thumb_base64: str | None = None
    thumb_filename: str = "thumb.png"


@router.get("/templates", tags=["templates"])
async def list_templates(push: Push) -> list[TemplateOut]:
    return [TemplateOut(name=n, template=t) for n, t in await push.list_templates()]


@router.get("/templates/{name}", tags=["templates"])
async def get_template(push: Push, name: str) -> TemplateOut:
    return TemplateOut(name=name, template=await push.get_template(name))


@router.put("/templates/{name}", tags=["templates"])
async def put_template(
    push: Push, name: str, body: Annotated[TextTemplate | MiniProgramTemplateIn, Field(discriminator="kind")]
) -> TemplateOut:
    """Save a template; an unknown placeholder is refused, naming it."""
    if isinstance(body, TextTemplate):
        return TemplateOut(name=name, template=await push.save_template(name, body))
    data: dict[str, Any] = body.model_dump(exclude={"thumb_base64", "thumb_filename"}, exclude_none=True)
    if body.thumb_base64:
        try:
            cover = base64.b64decode(body.thumb_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(["thumb_base64: 不是有效的 base64 / not valid base64"]) from None
        data["thumb"] = await push.save_thumb(cover, body.thumb_filename)
    elif not body.thumb:
        raise InvalidInput(["thumb_base64: 小程序卡片需要封面图 / a card needs a cover image"])
    template = validated(MiniProgramTemplate, data)
    return TemplateOut(name=name, template=await push.save_template(name, template))


@router.delete("/templates/{name}", tags=["templates"])
async def delete_template(push: Push, name: str) -> dict[str, str]:
    await push.delete_template(name)
    return {"deleted": name}


# --- errors ---------------------------------------------------------------------------------------


def _error(status: int, exc: Exception, problems: list[str] | None = None) -> JSONResponse:
    return JSONResponse({"error": str(exc).split("\n")[0], "problems": problems or []}, status_code=status)


def _where(item: Mapping[str, Any]) -> str:
    """The place of a request's error as its caller knows it: a body's field by name (`open_kfid`), a
    query parameter as `query.limit`, and the body itself (unreadable JSON: FastAPI's `loc` is then
    `body` and a character offset, which means nothing to a caller) as the body."""
    loc = list(item["loc"])
    if loc[:1] == ["body"]:
        loc = [] if item["type"] == "json_invalid" else loc[1:]
    return ".".join(str(p) for p in loc) or "请求体 / body"


_UNPARSABLE = "There was an error parsing the body"  # fastapi.routing's detail for a body it cannot decode


def install(app: FastAPI) -> None:
    """Add the /api routes and their error handlers to `app` (its state holds `push` and `settings`)."""
    app.include_router(router)

    @app.exception_handler(PushError)
    async def push_error(request: Request, exc: PushError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return _error(404, exc)
        problems = exc.problems if isinstance(exc, InvalidInput | ImportRefused) else []
        return _error(422, exc, problems)

    @app.exception_handler(MediaError)
    async def media_error(request: Request, exc: MediaError) -> JSONResponse:
        unavailable = isinstance(exc, MediaStoreError) and not isinstance(exc, MediaNotFound)
        return _error(503 if unavailable else 422, exc)  # the store down is not the request's fault

    @app.exception_handler(WeComError)
    async def wecom_error(request: Request, exc: WeComError) -> JSONResponse:
        return _error(502, exc)

    # FastAPI answers a body it cannot decode (not UTF-8) with its own 400; the API's callers get the
    # shape every other refused body has. Every other HTTP error goes to the handler already in place
    # (the console's pages for /console, FastAPI's own elsewhere).
    outer = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)

    async def undecodable_body(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path.startswith("/api/") and exc.status_code == 400 and exc.detail == _UNPARSABLE:
            return JSONResponse(
                {
                    "error": "请求无效，未做任何修改 / invalid request, nothing was changed",
                    "problems": [
                        "请求体 / body: 不是 UTF-8 编码的 JSON / the body is not UTF-8 encoded JSON"
                    ],
                },
                status_code=422,
            )
        answered = outer(request, exc)
        return await answered if inspect.isawaitable(answered) else answered

    app.add_exception_handler(StarletteHTTPException, undecodable_body)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [worded(item, _where(item)) for item in exc.errors()]
        return JSONResponse(
            {"error": "请求无效，未做任何修改 / invalid request, nothing was changed", "problems": problems},
            status_code=422,
        )
