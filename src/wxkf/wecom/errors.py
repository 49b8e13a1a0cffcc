"""wxkf's exception tree for the WeCom protocol layer.

    WeComError                      anything that went wrong talking to WeCom
    ├── CallbackCryptoError         a callback failed verification or decryption (spec §1)
    │   ├── InvalidSignatureError       msg_signature does not match (-40001)
    │   ├── MalformedXMLError           the body or plaintext is not the expected XML (-40002)
    │   ├── InvalidAESKeyError          the EncodingAESKey is not 43 characters (-40004)
    │   ├── CorpIdMismatchError         receiveid differs from the configured corp id (-40005)
    │   ├── DecryptError                base64/AES/PKCS#7/length framing is wrong (-40007/-40008/-40010)
    ├── InvalidArgumentError        a request breaks a documented limit; refused before it is sent
    ├── TransportError              no valid answer reached us (timeout, connection, 5xx)
    │   └── MalformedResponseError      the answer is not WeCom JSON (HTML, truncated) or lacks fields
    └── APIError                    WeCom answered with errcode != 0
        ├── TokenError                  40001 / 40014 / 42001 / 40013 / 41001: credentials or token
        ├── RateLimitedError            45009 / 45033 / -1: retried with backoff, then raised
        ├── PermissionDeniedError       48002 / 60020: app permission or IP whitelist (企业可信IP)
        ├── SessionStateError           95018 / 95016 / 95014 / 95013 / 95019: kf session state
        ├── SendLimitError              95001 / 95002: the 5-message / 48 h budget
        └── InvalidRequestError         everything else 4xxxx / 9xxxx: the request itself is wrong

Every `APIError` carries `errcode`, `errmsg`, `api` and a `hint` (from the error catalog), and the
IP WeCom reported when it said so (`from ip: …`, used for 60020). `error_for_errcode` is the one
place that turns an errcode into an exception.
"""

from __future__ import annotations

import re

_FROM_IP_RE = re.compile(r"from ip:\s*([0-9a-fA-F:.]+)")


def reported_ip(errmsg: str) -> str | None:
    """The caller IP WeCom names in an errmsg (`…, from ip: 1.2.3.4, …`), used for 60020."""
    match = _FROM_IP_RE.search(errmsg)
    return match.group(1) if match else None


class WeComError(Exception):
    """Base of every error raised by the WeCom protocol layer."""


class CallbackCryptoError(WeComError):
    """A callback failed verification or decryption. `code` is the sample library's -400xx code."""

    code = -40000

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSignatureError(CallbackCryptoError):
    code = -40001


class MalformedXMLError(CallbackCryptoError):
    code = -40002


class InvalidAESKeyError(CallbackCryptoError):
    code = -40004


class CorpIdMismatchError(CallbackCryptoError):
    code = -40005


class DecryptError(CallbackCryptoError):
    code = -40007


class InvalidArgumentError(WeComError, ValueError):
    """A request breaks a limit the spec documents (length, count, format); nothing was sent."""

    def __init__(self, api: str, field: str, message: str) -> None:
        super().__init__(f"{api}: {field}: {message}")
        self.api = api
        self.field = field
        self.message = message


class TransportError(WeComError):
    """WeCom could not be reached, or answered with something that is not WeCom JSON.

    `retryable` is False when trying again cannot help (a JSON answer missing documented fields).
    """

    retryable = True

    def __init__(self, api: str, message: str) -> None:
        super().__init__(f"{api}: {message}")
        self.api = api
        self.message = message


class MalformedResponseError(TransportError):
    """WeCom (or something in between) answered with a body the client cannot use.

    `excerpt` is the start of the body, with tokens and secrets already removed.
    """

    def __init__(self, api: str, message: str, excerpt: str, *, retryable: bool) -> None:
        super().__init__(api, f"{message}: {excerpt!r}")
        self.excerpt = excerpt
        self.retryable = retryable


class APIError(WeComError):
    """WeCom answered `errcode != 0`."""

    def __init__(self, api: str, errcode: int, errmsg: str, hint: str = "") -> None:
        self.api = api
        self.errcode = errcode
        self.errmsg = errmsg
        self.hint = hint
        self.from_ip = reported_ip(errmsg)
        text = f"{api} errcode={errcode} errmsg={errmsg}"
        if hint:
            text += f"\n{hint}"
        super().__init__(text)


class TokenError(APIError):
    """The secret, corp id or access_token is wrong or expired."""


class RateLimitedError(APIError):
    """WeCom throttled the call (45009 rate, 45033 concurrency) or was busy (-1)."""


class PermissionDeniedError(APIError):
    """The app lacks permission (48002) or the server IP is not trusted (60020)."""


class SessionStateError(APIError):
    """The kf session's state forbids the operation (95018 and friends)."""


class SendLimitError(APIError):
    """WeCom's per-customer send budget: 5 messages (95001) within 48 h (95002)."""


class InvalidRequestError(APIError):
    """The request itself is wrong (bad parameter, unknown id, …)."""


TOKEN_ERRCODES = frozenset({40001, 40014, 42001, 40013, 41001})
TOKEN_REFRESH_ERRCODES = frozenset({40001, 40014, 42001})
TOKEN_EXPIRED_ERRCODES = frozenset({40014, 42001})  # a new token fixes them; 40001 (the secret) it does not
RETRYABLE_ERRCODES = frozenset({-1, 45009, 45033})
_BY_ERRCODE: dict[int, type[APIError]] = {
    **{code: TokenError for code in TOKEN_ERRCODES},
    **{code: RateLimitedError for code in RETRYABLE_ERRCODES},
    48002: PermissionDeniedError,
    60020: PermissionDeniedError,
    95018: SessionStateError,
    95016: SessionStateError,
    95014: SessionStateError,
    95013: SessionStateError,
    95019: SessionStateError,
    95001: SendLimitError,
    95002: SendLimitError,
}


def retry_later(error: BaseException) -> bool:
    """Whether the same request may succeed later, unchanged: throttling, no answer, or a token
    revoked again while it was being replaced (wecom-api §7.4). Callers with work queued retry it."""
    if isinstance(error, RateLimitedError | TransportError):
        return True
    return isinstance(error, TokenError) and error.errcode in TOKEN_EXPIRED_ERRCODES


def error_for_errcode(api: str, errcode: int, errmsg: str) -> APIError:
    """Build the exception for a WeCom errcode, with the catalog's hint attached."""
    from wxkf.wecom.catalog import hint_for  # local: the catalog is data, loaded on first error

    cls = _BY_ERRCODE.get(errcode, InvalidRequestError)
    return cls(api, errcode, errmsg, hint_for(errcode, errmsg))
