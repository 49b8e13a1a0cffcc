"""The async WeCom API client: one typed method per API, tokens, retries, and errors in one place.

    async with WeComClient(api_base, corp_id, secret, token_store=MemoryTokenStore()) as wecom:
        await wecom.send_text(open_kfid, external_userid, "您好")

* access_token: fetched with gettoken, kept in the `TokenStore` (shared across processes with
  `PostgresTokenStore`), refreshed 5 minutes before expiry; when WeCom refuses it (40001/40014/
  42001) the client refreshes once and retries the call once (wecom-api §7.4).
* Retries: -1, 45009, 45033 and transport failures (timeouts, connection errors, 5xx, non-JSON
  bodies) are retried with exponential backoff and full jitter, within `RetryPolicy.attempts` and
  `RetryPolicy.deadline`; then the typed error is raised (wecom-api §7.2, §10).
* Every error is a `WeComError` (see `wxkf.wecom.errors`); `_decode_json` is the one place where a
  response becomes data or an exception. Nothing this module raises or logs contains the secret or
  an access_token: URLs and bodies are redacted before they reach a message.
* `on_api_error(api, errcode)`: an optional async hook called for every errcode WeCom answers
  (each attempt, gettoken included), so a layer above can count them — this module stays free of
  any database. A failing hook is logged and never changes the call's outcome.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from wxkf.wecom.errors import (
    RETRYABLE_ERRCODES,
    TOKEN_REFRESH_ERRCODES,
    APIError,
    InvalidArgumentError,
    MalformedResponseError,
    TransportError,
    WeComError,
    error_for_errcode,
)
from wxkf.wecom.models import (
    MEDIA_MAX_BYTES,
    MEDIA_MIN_BYTES,
    AccountListResponse,
    AddContactWayResponse,
    AddMsgTemplateRequest,
    AddMsgTemplateResponse,
    APIResponse,
    AppMessageSendResponse,
    CustomerBatchGetResponse,
    ExternalContactGetResponse,
    ExternalContactListResponse,
    GetGroupMsgListV2Request,
    GetGroupMsgListV2Response,
    GetGroupMsgSendResultResponse,
    GetGroupMsgTaskResponse,
    GetTokenResponse,
    MediaKind,
    MediaUploadResponse,
    MsgMenu,
    SendMsgOnEventRequest,
    SendMsgRequest,
    SendMsgResponse,
    ServicerListResponse,
    ServiceStateGetResponse,
    ServiceStateTransRequest,
    ServiceStateTransResponse,
    SyncMsgRequest,
    SyncMsgResponse,
    Text,
    UpgradeServiceConfigResponse,
    UpgradeServiceRequest,
    check_bytes,
    check_count,
    check_id,
)
from wxkf.wecom.tokens import CachedToken, TokenKey, TokenStore
from wxkf.wecom.transport import AiohttpTransport

__all__ = ["MediaFile", "RetryPolicy", "WeComClient", "redact"]

logger = logging.getLogger("wxkf.wecom")

ModelT = TypeVar("ModelT", bound=BaseModel)
ResultT = TypeVar("ResultT")

ApiErrorHook = Callable[[str, int], Awaitable[None]]
"""`on_api_error(api, errcode)`, e.g. `("kf/send_msg", 95018)`."""

EXCERPT_CHARS = 200
MAX_TOKEN_REFRESHES = 3  # per call: a token revoked again and again is then the caller's to retry
_SECRET_PARAM_RE = re.compile(r"""(access_token|corpsecret)(["']?\s*[:=]\s*["']?)[^&\s"'<>,;}]*""", re.I)


def redact(text: str, *values: str) -> str:
    """`text` with access_token/corpsecret parameters (URL or JSON) and the given values masked."""
    text = _SECRET_PARAM_RE.sub(r"\1\2***", text)
    for value in values:
        if value:
            text = text.replace(value, "***")
    return text


class _RedactQueryFilter(logging.Filter):
    """httpx logs each request URL at INFO; the URL carries access_token (or corpsecret for gettoken)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "access_token" in message or "corpsecret" in message:
            record.msg, record.args = redact(message), None
        return True


logging.getLogger("httpx").addFilter(_RedactQueryFilter())


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: at most `attempts` tries, waits from full-jitter exponential backoff
    (uniform in [0, min(max_delay, base_delay·2^n)]), and never past `deadline` seconds in total."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    deadline: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or self.deadline <= 0:
            raise ValueError("RetryPolicy: attempts ≥ 1, delays ≥ 0 and deadline > 0 are required")

    def backoff(self, retry: int) -> float:
        """The wait before retry number `retry` (0-based)."""
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2.0**retry))


def _retryable(error: WeComError) -> bool:
    if isinstance(error, APIError):
        return error.errcode in RETRYABLE_ERRCODES
    return isinstance(error, TransportError) and error.retryable


async def _report(hook: ApiErrorHook, api: str, errcode: int) -> None:
    try:
        await hook(api, errcode)
    except Exception as exc:  # counting must not turn a WeCom answer into another failure
        logger.warning(
            "WeCom 错误码计数失败 / the on_api_error hook failed for api=%s errcode=%s: %s",
            api,
            errcode,
            type(exc).__name__,
        )


@dataclass(frozen=True)
class MediaFile:
    """A downloaded media file: its bytes, content type and the file name WeCom gave it."""

    data: bytes
    content_type: str
    filename: str


_FILENAME_RE = re.compile(r"""filename\*?=(?:UTF-8'')?["']?([^"';]+)""", re.I)


def _attachment_filename(disposition: str) -> str:
    from urllib.parse import unquote

    found = _FILENAME_RE.search(disposition)
    return unquote(found.group(1)).strip() if found else ""


def _excerpt(response: httpx.Response) -> str:
    return response.content[: EXCERPT_CHARS * 2].decode("utf-8", "replace")[:EXCERPT_CHARS]


class WeComClient:
    """One corp id + secret (one WeCom app) against `api_base`; see the module docstring."""

    def __init__(
        self,
        api_base: str,
        corp_id: str,
        secret: SecretStr | str,
        *,
        token_store: TokenStore,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        on_api_error: ApiErrorHook | None = None,
    ) -> None:
        self._secret = secret if isinstance(secret, SecretStr) else SecretStr(secret)
        if not corp_id or not self._secret.get_secret_value():
            raise InvalidArgumentError(
                "client",
                "corp_id/secret",
                "请设置 WECOM_CORP_ID 和对应的 secret / set WECOM_CORP_ID and the app's secret",
            )
        self.corp_id = corp_id
        self._key = TokenKey.for_secret(corp_id, self._secret.get_secret_value())
        self._store = token_store
        self._retry = retry
        self._timeout = timeout
        self._token: CachedToken | None = None
        self._token_lock = asyncio.Lock()
        self.on_api_error = on_api_error
        self._http = httpx.AsyncClient(
            base_url=api_base.rstrip("/"), transport=transport or AiohttpTransport(), timeout=timeout
        )

    def __repr__(self) -> str:
        return f"WeComClient(api_base={str(self._http.base_url)!r}, corp_id={self.corp_id!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- redaction, tokens ---------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        token = self._token.access_token if self._token else ""
        return redact(text, self._secret.get_secret_value(), token)

    async def _fetch_token(self) -> CachedToken:
        data = await self._call(
            "gettoken",
            "GET",
            "/cgi-bin/gettoken",
            self._decode_json,
            params={"corpid": self.corp_id, "corpsecret": self._secret.get_secret_value()},
            auth=False,
        )
        parsed = self._parse("gettoken", GetTokenResponse, data)
        return CachedToken(parsed.access_token, datetime.now(UTC) + timedelta(seconds=parsed.expires_in))

    async def access_token(self, *, rejected: str | None = None) -> str:
        """A fresh access_token: this client's copy, else the store's, else one refresh for everyone."""
        current = self._token
        if current is not None and current.fresh() and current.access_token != rejected:
            return current.access_token
        # One coroutine per client goes to the store; the store's lock covers other clients/processes.
        async with self._token_lock:
            current = self._token
            if current is None or not current.fresh() or current.access_token == rejected:
                stored = None if rejected else await self._store.load(self._key)
                if stored is not None and stored.fresh():
                    current = stored
                else:
                    current = await self._store.refresh(self._key, self._fetch_token, rejected=rejected)
                self._token = current
            return current.access_token

    # --- the one request loop --------------------------------------------------------------------------

    async def _call(
        self,
        api: str,
        method: Literal["GET", "POST"],
        path: str,
        decode: Callable[[str, httpx.Response], ResultT],
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        auth: bool = True,
        creates: bool = False,
    ) -> ResultT:
        """One API call with token handling and bounded retries.

        `creates`: the call creates or sends something (a message, a task, a reminder). A failure
        after the request may have reached WeCom (a timeout while waiting, a broken answer) is then
        not retried here: a second request could send twice. Refusals WeCom answered (45009 …) and
        connections that never opened are still retried; callers with an idempotency key (the
        outbox's msgid) retry at their level, where a duplicate is recognised.
        """
        policy = self._retry
        started = time.monotonic()
        retries = 0
        attempt = 0
        token_refreshes = 0
        while True:
            attempt += 1
            query: dict[str, str | int] = dict(params or {})
            token = ""
            if auth:
                token = await self.access_token()
                query["access_token"] = token
            remaining = policy.deadline - (time.monotonic() - started)
            cause: BaseException | None = None
            maybe_delivered = False
            try:
                response = await self._http.request(
                    method,
                    path,
                    params=query,
                    json=json,
                    files=files,
                    timeout=max(0.001, min(self._timeout, remaining)),
                )
                return decode(api, response)
            except WeComError as exc:
                error: WeComError = exc
                maybe_delivered = isinstance(exc, TransportError)  # something answered, not WeCom's JSON
            except httpx.TimeoutException as exc:
                cause = exc
                maybe_delivered = not isinstance(exc, httpx.ConnectTimeout)
                error = TransportError(
                    api, f"请求超时 / timed out ({type(exc).__name__}, limit {self._timeout:g} s)"
                )
            except httpx.HTTPError as exc:
                cause = exc
                maybe_delivered = not isinstance(exc, httpx.ConnectError)
                error = TransportError(
                    api, f"连接失败 / request failed: {type(exc).__name__}: {self._redact(str(exc))}"
                )
            self._log_failure(api, error, attempt)
            hook = self.on_api_error
            if hook is not None and isinstance(error, APIError):
                await _report(hook, api, error.errcode)
            if (
                auth
                and token_refreshes < MAX_TOKEN_REFRESHES
                and isinstance(error, APIError)
                and error.errcode in TOKEN_REFRESH_ERRCODES
            ):
                # wecom-api §7.4: WeCom may revoke a token early; refresh and retry. Under churn the
                # new token can be revoked before it is used, so a few times, each with a new token.
                token_refreshes += 1
                await self.access_token(rejected=token)
                continue
            if creates and maybe_delivered and _retryable(error):
                raise TransportError(
                    api,
                    f"{error.message if isinstance(error, TransportError) else error}；请求可能已送达企业微信，"
                    "为避免重复发送不自动重试，请先核对结果 / the request may have reached WeCom: not retried, "
                    "to avoid sending twice; check the outcome first",
                ) from cause
            delay = policy.backoff(retries)
            if (
                not _retryable(error)
                or retries + 1 >= policy.attempts
                or time.monotonic() - started + delay >= policy.deadline
            ):
                raise error from cause
            retries += 1
            await asyncio.sleep(delay)

    def _log_failure(self, api: str, error: WeComError, attempt: int) -> None:
        if isinstance(error, APIError):
            logger.warning(
                "WeCom API 错误 / error api=%s errcode=%s attempt=%d errmsg=%s",
                api,
                error.errcode,
                attempt,
                self._redact(error.errmsg),
            )
        else:
            logger.warning(
                "WeCom API 错误 / error api=%s errcode=none attempt=%d error=%s",
                api,
                attempt,
                self._redact(str(error)),
            )

    # --- decoding: the one place an answer becomes data or an exception -----------------------------

    def _decode_json(self, api: str, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 500:
            raise TransportError(api, f"HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise MalformedResponseError(
                api,
                f"返回的不是企业微信 JSON / not WeCom JSON (HTTP {response.status_code}, "
                f"{response.headers.get('content-type', 'no content-type')})",
                self._redact(_excerpt(response)),
                retryable=True,
            )
        errcode = data.get("errcode", 0)
        if not isinstance(errcode, int):
            raise MalformedResponseError(
                api,
                "errcode 不是整数 / errcode is not an integer",
                self._redact(_excerpt(response)),
                retryable=False,
            )
        if errcode != 0:
            raise error_for_errcode(api, errcode, self._redact(str(data.get("errmsg", ""))))
        return data

    def _decode_media(self, api: str, response: httpx.Response) -> MediaFile:
        content_type = response.headers.get("content-type", "").lower()
        # wecom-api §8 media/get: the file comes as an attachment; an error comes as JSON.
        if response.status_code < 500 and (
            "content-disposition" in response.headers
            or not any(kind in content_type for kind in ("json", "text/"))
        ):
            return MediaFile(
                response.content,
                content_type.split(";")[0].strip() or "application/octet-stream",
                _attachment_filename(response.headers.get("content-disposition", "")),
            )
        self._decode_json(api, response)
        raise MalformedResponseError(
            api,
            "期望文件内容，收到 JSON / expected file bytes, got JSON",
            self._redact(_excerpt(response)),
            retryable=False,
        )

    def _parse(self, api: str, model: type[ModelT], data: dict[str, Any]) -> ModelT:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in err["loc"]) or "<root>" for err in exc.errors())
            raise MalformedResponseError(
                api,
                f"返回缺少或不符合文档的字段 / response lacks documented fields ({fields})",
                self._redact(str(data)[:EXCERPT_CHARS]),
                retryable=False,
            ) from None

    async def _post(
        self, api: str, path: str, model: type[ModelT], body: Any, *, creates: bool = False
    ) -> ModelT:
        data = await self._call(api, "POST", path, self._decode_json, json=body, creates=creates)
        return self._parse(api, model, data)

    async def _get(self, api: str, path: str, model: type[ModelT], params: Mapping[str, str | int]) -> ModelT:
        data = await self._call(api, "GET", path, self._decode_json, params=params)
        return self._parse(api, model, data)

    @staticmethod
    def _body(request: BaseModel) -> dict[str, Any]:
        return request.model_dump(mode="json", by_alias=True, exclude_none=True)

    # --- kf (wecom-api §3–§6, §8) -------------------------------------------------------------------

    async def sync_msg(
        self,
        open_kfid: str,
        cursor: str | None = None,
        token: str | None = None,
        limit: int = 1000,
        voice_format: int | None = None,
    ) -> SyncMsgResponse:
        """Read messages and events of one kf account after `cursor` (wecom-api §3)."""
        request = SyncMsgRequest(
            open_kfid=open_kfid,
            cursor=cursor or None,
            token=token or None,
            limit=limit,
            voice_format=voice_format,
        )
        request.check("kf/sync_msg")
        return await self._post("kf/sync_msg", "/cgi-bin/kf/sync_msg", SyncMsgResponse, self._body(request))

    async def send_msg(self, request: SendMsgRequest) -> SendMsgResponse:
        """Send one message of any §4 msgtype. Success does not mean delivered: watch msg_send_fail."""
        request.check("kf/send_msg")
        return await self._post(
            "kf/send_msg", "/cgi-bin/kf/send_msg", SendMsgResponse, self._body(request), creates=True
        )

    async def send_text(
        self, open_kfid: str, touser: str, content: str, msgid: str | None = None
    ) -> SendMsgResponse:
        return await self.send_msg(
            SendMsgRequest(
                open_kfid=open_kfid, touser=touser, msgid=msgid, msgtype="text", text=Text(content=content)
            )
        )

    async def send_msg_on_event(
        self, code: str, message: Text | MsgMenu, msgid: str | None = None
    ) -> SendMsgResponse:
        """Answer an event code (welcome_code, msg_code) with a text or menu, once (wecom-api §5)."""
        if isinstance(message, Text):
            request = SendMsgOnEventRequest(code=code, msgid=msgid, msgtype="text", text=message)
        else:
            request = SendMsgOnEventRequest(code=code, msgid=msgid, msgtype="msgmenu", msgmenu=message)
        request.check("kf/send_msg_on_event")
        return await self._post(
            "kf/send_msg_on_event",
            "/cgi-bin/kf/send_msg_on_event",
            SendMsgResponse,
            self._body(request),
            creates=True,
        )

    async def get_service_state(self, open_kfid: str, external_userid: str) -> tuple[int, str | None]:
        """(service_state, servicer_userid); the servicer is set only in state 3 (wecom-api §6)."""
        response = await self._post(
            "kf/service_state/get",
            "/cgi-bin/kf/service_state/get",
            ServiceStateGetResponse,
            {"open_kfid": open_kfid, "external_userid": external_userid},
        )
        return response.service_state, response.servicer_userid or None

    async def trans_service_state(
        self, open_kfid: str, external_userid: str, service_state: int, servicer_userid: str | None = None
    ) -> str | None:
        """Move the session to `service_state`; returns the msg_code WeCom hands out for 2/3/4 (§5, §6)."""
        request = ServiceStateTransRequest(
            open_kfid=open_kfid,
            external_userid=external_userid,
            service_state=service_state,
            servicer_userid=servicer_userid,
        )
        request.check("kf/service_state/trans")
        response = await self._post(
            "kf/service_state/trans",
            "/cgi-bin/kf/service_state/trans",
            ServiceStateTransResponse,
            self._body(request),
        )
        return response.msg_code or None

    async def list_accounts(self, offset: int = 0, limit: int = 100) -> AccountListResponse:
        check_count("kf/account/list", "limit", limit, 1, 100)
        return await self._post(
            "kf/account/list",
            "/cgi-bin/kf/account/list",
            AccountListResponse,
            {"offset": offset, "limit": limit},
        )

    async def list_servicers(self, open_kfid: str) -> ServicerListResponse:
        # wecom-api §8: servicer/list is a GET with open_kfid in the query.
        return await self._get(
            "kf/servicer/list", "/cgi-bin/kf/servicer/list", ServicerListResponse, {"open_kfid": open_kfid}
        )

    async def batchget_customers(
        self, external_userids: list[str], need_enter_session_context: bool = False
    ) -> CustomerBatchGetResponse:
        check_count("kf/customer/batchget", "external_userid_list", len(external_userids), 1, 100)
        return await self._post(
            "kf/customer/batchget",
            "/cgi-bin/kf/customer/batchget",
            CustomerBatchGetResponse,
            {
                "external_userid_list": external_userids,
                "need_enter_session_context": int(need_enter_session_context),
            },
        )

    async def add_contact_way(self, open_kfid: str, scene: str = "") -> AddContactWayResponse:
        """The customer-facing link of a kf account; `scene` comes back in enter_session (§8)."""
        body: dict[str, str] = {"open_kfid": open_kfid}
        if scene:
            check_id("kf/add_contact_way", "scene", scene)
            body["scene"] = scene
        return await self._post(
            "kf/add_contact_way", "/cgi-bin/kf/add_contact_way", AddContactWayResponse, body
        )

    async def upload_media(self, kind: MediaKind, filename: str, data: bytes) -> MediaUploadResponse:
        """Upload a temporary media file (valid 3 days) as multipart field `media` (wecom-api §8)."""
        api = "media/upload"
        if kind not in MEDIA_MAX_BYTES:
            raise InvalidArgumentError(
                api, "type", "须为 image/voice/video/file / must be image, voice, video or file"
            )
        check_count(api, "len(data)", len(data), MEDIA_MIN_BYTES, MEDIA_MAX_BYTES[kind])
        check_bytes(api, "filename", filename, 255, minimum=1)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        data_ = await self._call(
            api,
            "POST",
            "/cgi-bin/media/upload",
            self._decode_json,
            params={"type": kind},
            files={"media": (filename, data, content_type)},
        )
        return self._parse(api, MediaUploadResponse, data_)

    async def get_media(self, media_id: str) -> bytes:
        """Download a temporary media file; a JSON answer (e.g. 40007 invalid media_id) raises."""
        return (await self.download_media(media_id)).data

    async def download_media(self, media_id: str) -> MediaFile:
        """`get_media` with the content type and file name WeCom sent along (wecom-api §8)."""
        check_bytes("media/get", "media_id", media_id, 256, minimum=1)
        return await self._call(
            "media/get", "GET", "/cgi-bin/media/get", self._decode_media, params={"media_id": media_id}
        )

    # --- upgrade service (升级服务, wecom-api §8, doc 94674) -------------------------------------------

    async def get_upgrade_service_config(self) -> UpgradeServiceConfigResponse:
        """The members and customer groups configured in 微信客服 → 升级服务 (a GET)."""
        return await self._get(
            "kf/customer/get_upgrade_service_config",
            "/cgi-bin/kf/customer/get_upgrade_service_config",
            UpgradeServiceConfigResponse,
            {},
        )

    async def upgrade_service(self, request: UpgradeServiceRequest) -> None:
        """Recommend a staff member (type 1) or a customer group (type 2) to the customer; the
        userid / chat_id must be configured in 升级服务, else 95021."""
        api = "kf/customer/upgrade_service"
        request.check(api)
        await self._post(api, f"/cgi-bin/{api}", APIResponse, self._body(request))

    async def cancel_upgrade_service(self, open_kfid: str, external_userid: str) -> None:
        api = "kf/customer/cancel_upgrade_service"
        check_bytes(api, "open_kfid", open_kfid, 64, minimum=1)
        check_bytes(api, "external_userid", external_userid, 64, minimum=1)
        await self._post(
            api, f"/cgi-bin/{api}", APIResponse, {"open_kfid": open_kfid, "external_userid": external_userid}
        )

    async def send_app_message(self, agentid: int, touser: str, text: str) -> AppMessageSendResponse:
        """A text from a self-built app to members (message/send), e.g. to alert staff."""
        check_bytes("message/send", "text.content", text, 2048, minimum=1)
        return await self._post(
            "message/send",
            "/cgi-bin/message/send",
            AppMessageSendResponse,
            {"touser": touser, "msgtype": "text", "agentid": agentid, "text": {"content": text}},
            creates=True,
        )

    # --- customer contact (wecom-api §9) ------------------------------------------------------------

    async def list_external_contacts(self, userid: str) -> ExternalContactListResponse:
        return await self._get(
            "externalcontact/list",
            "/cgi-bin/externalcontact/list",
            ExternalContactListResponse,
            {"userid": userid},
        )

    async def get_external_contact(
        self, external_userid: str, cursor: str | None = None
    ) -> ExternalContactGetResponse:
        params = {"external_userid": external_userid}
        if cursor:
            params["cursor"] = cursor
        return await self._get(
            "externalcontact/get", "/cgi-bin/externalcontact/get", ExternalContactGetResponse, params
        )

    async def add_msg_template(self, request: AddMsgTemplateRequest) -> AddMsgTemplateResponse:
        """Create a mass message; members confirm before anything is sent (wecom-api §9)."""
        request.check("externalcontact/add_msg_template")
        return await self._post(
            "externalcontact/add_msg_template",
            "/cgi-bin/externalcontact/add_msg_template",
            AddMsgTemplateResponse,
            self._body(request),
            creates=True,
        )

    async def get_groupmsg_list_v2(self, request: GetGroupMsgListV2Request) -> GetGroupMsgListV2Response:
        request.check("externalcontact/get_groupmsg_list_v2")
        return await self._post(
            "externalcontact/get_groupmsg_list_v2",
            "/cgi-bin/externalcontact/get_groupmsg_list_v2",
            GetGroupMsgListV2Response,
            self._body(request),
        )

    async def get_groupmsg_task(
        self, msgid: str, limit: int | None = None, cursor: str | None = None
    ) -> GetGroupMsgTaskResponse:
        api = "externalcontact/get_groupmsg_task"
        body: dict[str, str | int] = {"msgid": msgid}
        if limit is not None:
            check_count(api, "limit", limit, 1, 1000)
            body["limit"] = limit
        if cursor:
            body["cursor"] = cursor
        return await self._post(api, f"/cgi-bin/{api}", GetGroupMsgTaskResponse, body)

    async def get_groupmsg_send_result(
        self, msgid: str, userid: str, limit: int | None = None, cursor: str | None = None
    ) -> GetGroupMsgSendResultResponse:
        api = "externalcontact/get_groupmsg_send_result"
        body: dict[str, str | int] = {"msgid": msgid, "userid": userid}
        if limit is not None:
            check_count(api, "limit", limit, 1, 1000)
            body["limit"] = limit
        if cursor:
            body["cursor"] = cursor
        return await self._post(api, f"/cgi-bin/{api}", GetGroupMsgSendResultResponse, body)

    async def remind_groupmsg_send(self, msgid: str) -> None:
        """Remind members to send; at most 3 times per 24 h per message, else 41094 (wecom-api §9)."""
        api = "externalcontact/remind_groupmsg_send"
        await self._call(
            api, "POST", f"/cgi-bin/{api}", self._decode_json, json={"msgid": msgid}, creates=True
        )

    async def cancel_groupmsg_send(self, msgid: str) -> None:
        api = "externalcontact/cancel_groupmsg_send"
        await self._call(api, "POST", f"/cgi-bin/{api}", self._decode_json, json={"msgid": msgid})
