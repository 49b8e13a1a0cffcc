"""Structured logs: JSON lines (or a readable console format on a terminal), daily-rotated files, redaction.

`configure_logging(settings)` is called once by each entry point (`wxkf serve`, the worker, …). It
installs on the root logger, so uvicorn, httpx, procrastinate and wxkf all go through the same
handlers:

* stderr: JSON lines, or a readable console format when stderr is a terminal;
* `WXKF_DATA_DIR/logs/app.log` (everything at `LOG_LEVEL`) and `error.log` (ERROR and above),
  rotated at midnight, 14 days kept;
* every line carries the request id and the conversation (`open_kfid`, `external_userid`) bound
  with `log_context(...)` for the current task.

The JSON lines are python-json-logger's; the console format and the redaction are wxkf's own.
Redaction happens in a filter on every handler, before anything is formatted: each configured secret
value (every `SecretStr` field of `Settings`, and the password inside `DATABASE_URL`),
`access_token=…`, `corpsecret=…`, `Authorization: Bearer …` and URL passwords are replaced by `***`.

Customer message bodies: the convention is that message text is never put into the log message
itself but passed as `extra={"content": …}`. That field is replaced by a placeholder unless
`LOG_CONTENT=true`. Other `extra` fields are written as JSON keys (e.g. `decision="replied"`), so
one line per decision can be searched and counted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from pydantic import SecretStr
from pythonjsonlogger.json import JsonFormatter

from wxkf.config import Settings

REDACTED = "***"
CONTENT_HIDDEN = "[已隐藏 / hidden: LOG_CONTENT=false]"
CONTENT_FIELD = "content"
LOG_FILE = "app.log"
ERROR_LOG_FILE = "error.log"
BACKUP_DAYS = 14

_CONTEXT_FIELDS = ("request_id", "open_kfid", "external_userid")
_context: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"wxkf_log_{name}", default=None) for name in _CONTEXT_FIELDS
}

# Credentials that travel in URLs, headers and JSON bodies, whatever their value.
_PATTERNS = [
    # `token=` is also the 10-minute sync_msg token of a callback (wecom-api §2), e.g. in job reprs.
    re.compile(r"(?i)(\b(?:access_token|corpsecret|secret|api_key|password|token)=[\"']?)[^&\s\"'<>,)]+"),
    re.compile(
        r"(?i)([\"'](?:access_token|corpsecret|secret|api_key|password|token)[\"']\s*:\s*[\"'])[^\"']*"
    ),
    re.compile(r"(?i)(authorization[\"']?\s*[:=]?\s*[\"']?\s*bearer\s+)[^\s\"',}]+"),
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+(?=@)"),
]

_BEFORE = r"(?:(?<![A-Za-z0-9_])|(?<=%[0-9A-Fa-f]{2}))"  # a secret's left neighbour (see `Redactor`)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)
_HANDLER_MARK = "_wxkf_handler"


# Context ----------------------------------------------------------------------------------------


@contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Bind `request_id` / `open_kfid` / `external_userid` to every line logged inside the block."""
    unknown = set(values) - set(_CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context field(s): {sorted(unknown)}")
    tokens = [(_context[name], _context[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_context() -> dict[str, str]:
    return {name: value for name, var in _context.items() if (value := var.get()) is not None}


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


# Redaction --------------------------------------------------------------------------------------


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold: each `SecretStr` field, and the password inside DATABASE_URL."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            values.append(value.get_secret_value())
    if settings.database_url is not None:
        try:
            password = urlsplit(settings.database_url.get_secret_value()).password
        except ValueError:
            password = None
        if password:
            values.append(password)
    return values


class Redactor:
    """Replaces secret values and credential-shaped substrings with `***`.

    A secret value is replaced where it stands as a value of its own, not inside a longer word: a
    short WECOM_TOKEN such as `tok` must not turn `access_token` into `access_***en`. Its neighbours
    may be anything but a letter, digit or `_` (a URL-encoded `%26` counts as a neighbour).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is removed whole.
        ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._secrets = [
            (secret, re.compile(_BEFORE + re.escape(secret) + r"(?![A-Za-z0-9_])")) for secret in ordered
        ]

    def __call__(self, text: str) -> str:
        for secret, pattern in self._secrets:
            if secret in text:
                text = pattern.sub(REDACTED, text)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text

    def value(self, value: Any) -> Any:
        """Redact strings inside any JSON-like value."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self(str(value))


class RedactionFilter(logging.Filter):
    """Renders each record's message once, redacted, and hides content unless allowed.

    Installed on handlers (not loggers) so records propagated from any library pass through it.
    """

    def __init__(self, redactor: Redactor, *, log_content: bool) -> None:
        super().__init__()
        self.redactor = redactor
        self.log_content = log_content

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_wxkf_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not lose the line
            message = f"{record.msg!r} % {record.args!r}"
        outage = _expected_interruption(record.exc_info[1] if record.exc_info else None)
        if outage is not None:
            # An outage or a shutdown is an expected event, not a bug: one line, no traceback.
            message = f"{message} ({outage})"
            record.exc_info = None
            record.exc_text = None
        record.msg = self.redactor(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        for key in list(vars(record)):
            if key in _STANDARD_ATTRS or key.startswith("_"):
                continue
            if key == CONTENT_FIELD and not self.log_content:
                setattr(record, key, CONTENT_HIDDEN)
            else:
                setattr(record, key, self.redactor.value(getattr(record, key)))
        for name, value in current_context().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        record._wxkf_redacted = True
        return True


def _expected_interruption(exc: BaseException | None) -> str | None:
    """'<Type>: <first line>' when `exc` is an interruption, not a bug, else None.

    A lost database connection anywhere in the chain (an outage), or a cancellation (a job cut
    short by a worker's shutdown, then retried): a traceback would only bury the one useful line.
    """
    if isinstance(exc, asyncio.CancelledError):
        return "CancelledError: 已中断 / interrupted (shutdown)"
    if exc is None or "psycopg" not in sys.modules:  # not imported: no psycopg error can be on the way
        return None
    from wxkf.db.engine import connection_lost

    lost = connection_lost(exc)
    if lost is None:
        return None
    lines = str(lost).strip().splitlines()
    return f"{type(lost).__name__}: {lines[0]}" if lines else type(lost).__name__


# Formatting -------------------------------------------------------------------------------------


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


class JSONFormatter(JsonFormatter):
    """One JSON object per line (python-json-logger): ts, level, logger, msg, the context ids and
    `extra` fields, exc."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"],
            rename_fields={
                "asctime": "ts",
                "levelname": "level",
                "name": "logger",
                "message": "msg",
                "exc_info": "exc",
                "stack_info": "stack",
            },
            json_default=str,
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        # The redaction filter rendered the traceback into exc_text, redacted; the library would
        # format exc_info afresh, secrets and all, so it gets the rendered text only.
        exc_info, record.exc_info = record.exc_info, None
        try:
            return super().format(record)
        finally:
            record.exc_info = exc_info


class ConsoleFormatter(logging.Formatter):
    """`12:00:01 INFO  wxkf.kf.sync  message  key=value …` for a human at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        text = f"{when} {record.levelname:<7} {record.name}  {record.getMessage()}"
        extras = _extras(record)
        if extras:
            text += "  " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        return text


# Set-up -----------------------------------------------------------------------------------------


def log_dir(settings: Settings) -> Path:
    return settings.wxkf_data_dir / "logs"


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> Path:
    """Install wxkf's handlers on the root logger (idempotent); return the log directory.

    `stream` defaults to stderr; JSON is written unless it is a terminal.
    """
    stream = stream if stream is not None else sys.stderr
    directory = log_dir(settings)
    unwritable: str | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only or foreign WXKF_DATA_DIR: the lines still reach stderr
        unwritable = f"无法写入日志目录 {directory}（{exc.strerror}）/ cannot write logs to {directory}"
    redaction = RedactionFilter(Redactor(secret_values(settings)), log_content=settings.log_content)
    level = logging.getLevelName(settings.log_level)

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()

    console: logging.Handler = logging.StreamHandler(stream)
    console.setFormatter(ConsoleFormatter() if _is_terminal(stream) else JSONFormatter())
    console.setLevel(level)
    app_file = TimedRotatingFileHandler(
        directory / LOG_FILE, when="midnight", backupCount=BACKUP_DAYS, encoding="utf-8", delay=True
    )
    app_file.setLevel(level)
    error_file = TimedRotatingFileHandler(
        directory / ERROR_LOG_FILE, when="midnight", backupCount=BACKUP_DAYS, encoding="utf-8", delay=True
    )
    error_file.setLevel(logging.ERROR)
    for handler in (console,) if unwritable else (console, app_file, error_file):
        handler.addFilter(redaction)
        if handler is not console:
            handler.setFormatter(JSONFormatter())
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    root.setLevel(level)
    # Libraries that configure their own handlers would bypass redaction: send them to the root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "procrastinate"):
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    # httpx logs every request URL at INFO; the URLs carry access_token (redacted) and are noise.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
    # httpcore's DEBUG lines trace sockets, nothing an operator needs.
    logging.getLogger("httpcore").setLevel(max(level, logging.INFO))
    # The openai SDK logs whole request bodies at DEBUG: the prompt, i.e. customer messages.
    # pgserver narrates every pg_ctl call at INFO; its warnings and errors are what an operator needs.
    logging.getLogger("pgserver").setLevel(max(level, logging.WARNING))
    logging.getLogger("openai").setLevel(level if settings.log_content else max(level, logging.INFO))
    if unwritable:
        logging.getLogger("wxkf").warning(unwritable)
    return directory


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
