"""Structured logging: JSON lines, context ids, files, and that no secret or message body escapes."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from wxkf.config import Settings
from wxkf.ops.logging import (
    CONTENT_HIDDEN,
    REDACTED,
    Redactor,
    configure_logging,
    log_context,
    secret_values,
)

KF_SECRET = "kfSecretValue0123456789abcdefABCDEF"
CONTACT_SECRET = "contactSecret9876543210zyxwvu"
AGENT_SECRET = "agentSecretQWERTYUIOP"
TOKEN = "CallbackToken42"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
LLM_KEY = "sk-llmkey-0123456789abcdef"
DB_PASSWORD = "dbPassw0rdXYZ"
SECRETS = [KF_SECRET, CONTACT_SECRET, AGENT_SECRET, TOKEN, AES_KEY, LLM_KEY, DB_PASSWORD]
CUSTOMER_TEXT = "我的手机号是13800138000，地址在上海"


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "wecom_corp_id": "ww0123456789",
        "wecom_kf_secret": KF_SECRET,
        "wecom_contact_secret": CONTACT_SECRET,
        "wecom_agent_id": 1000002,
        "wecom_agent_secret": AGENT_SECRET,
        "wecom_token": TOKEN,
        "wecom_aes_key": AES_KEY,
        "llm_api_key": LLM_KEY,
        "database_url": f"postgresql://wxkf:{DB_PASSWORD}@db.example:5432/wxkf",
        "wxkf_data_dir": tmp_path / "var",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def emit_everything(logger: logging.Logger) -> None:
    """Every way a secret or a message body could reach a log line."""
    logger.info("gettoken with corpsecret %s for %s", KF_SECRET, "ww0123456789")
    logger.info(
        "HTTP Request: GET https://qyapi.weixin.qq.com/cgi-bin/gettoken?corpid=ww01&corpsecret=whatever "
        "and kf/sync_msg?access_token=ACCESSTOKEN123&debug=1"
    )
    logger.info("headers {'Authorization': 'Bearer sk-unconfigured-bearer-value'}")
    logger.info('body {"access_token": "ACCESSTOKEN456", "expires_in": 7200}')
    logger.warning("settings %r", {"token": TOKEN, "aes": AES_KEY, "agent": AGENT_SECRET})
    logger.info("connecting", extra={"dsn": f"postgresql://wxkf:{DB_PASSWORD}@db.example/wxkf"})
    logger.info("contact", extra={"nested": {"list": [CONTACT_SECRET], "n": 1}})
    logger.info("customer said", extra={"content": CUSTOMER_TEXT, "decision": "replied"})
    try:
        raise RuntimeError(f"LLM call failed with key {LLM_KEY}")
    except RuntimeError:
        logger.exception("responder failed")


def all_output(stream: io.StringIO, directory: Path) -> str:
    for handler in logging.getLogger().handlers:
        handler.flush()
    files = "".join(p.read_text(encoding="utf-8") for p in sorted(directory.iterdir()))
    return stream.getvalue() + files


def test_no_secret_or_credential_reaches_any_log_output(tmp_path: Path, restore_logging: None) -> None:
    stream = io.StringIO()
    directory = configure_logging(make_settings(tmp_path), stream=stream)
    emit_everything(logging.getLogger("wxkf.test"))

    text = all_output(stream, directory)
    for secret in [*SECRETS, "whatever", "ACCESSTOKEN123", "ACCESSTOKEN456", "sk-unconfigured-bearer-value"]:
        assert secret not in text
    assert CUSTOMER_TEXT not in text
    # The lines are still there and still useful.
    assert "corpsecret=***" in text
    assert "access_token=***" in text
    assert "responder failed" in text
    assert f"LLM call failed with key {REDACTED}" in text


def test_json_lines_carry_context_ids_and_extra_fields(tmp_path: Path, restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(make_settings(tmp_path), stream=stream)
    logger = logging.getLogger("wxkf.kf")
    with log_context(request_id="req-1", open_kfid="wkABC", external_userid="wmXYZ"):
        logger.info("已回复 / replied", extra={"decision": "replied", "content": CUSTOMER_TEXT})
    logger.info("outside")

    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "已回复 / replied"
    assert first["level"] == "INFO"
    assert first["logger"] == "wxkf.kf"
    assert (first["request_id"], first["open_kfid"], first["external_userid"]) == ("req-1", "wkABC", "wmXYZ")
    assert first["decision"] == "replied"
    assert first["content"] == CONTENT_HIDDEN
    assert "request_id" not in second


def test_content_is_logged_only_when_allowed(tmp_path: Path, restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(make_settings(tmp_path, log_content=True), stream=stream)
    logging.getLogger("wxkf.kf").info("customer said", extra={"content": CUSTOMER_TEXT})
    assert json.loads(stream.getvalue())["content"] == CUSTOMER_TEXT


def test_error_log_has_only_errors_and_app_log_has_all(tmp_path: Path, restore_logging: None) -> None:
    directory = configure_logging(make_settings(tmp_path), stream=io.StringIO())
    logger = logging.getLogger("wxkf.test")
    logger.info("an ordinary line")
    logger.error("a failure")
    for handler in logging.getLogger().handlers:
        handler.flush()

    app_lines = [json.loads(x)["msg"] for x in (directory / "app.log").read_text().splitlines()]
    error_lines = [json.loads(x)["msg"] for x in (directory / "error.log").read_text().splitlines()]
    assert app_lines == ["an ordinary line", "a failure"]
    assert error_lines == ["a failure"]
    assert directory == tmp_path / "var" / "logs"


def test_terminal_gets_readable_console_format(tmp_path: Path, restore_logging: None) -> None:
    stream = TTY()
    configure_logging(make_settings(tmp_path), stream=stream)
    with log_context(open_kfid="wkABC"):
        logging.getLogger("wxkf.kf").warning("跳过 / skipped: state 3", extra={"decision": "skipped"})
    line = stream.getvalue()
    assert "WARNING" in line
    assert "跳过 / skipped: state 3" in line
    assert "decision=skipped" in line
    assert "open_kfid=wkABC" in line
    assert not line.startswith("{")


def test_configure_twice_does_not_duplicate_lines(tmp_path: Path, restore_logging: None) -> None:
    settings = make_settings(tmp_path)
    configure_logging(settings, stream=io.StringIO())
    stream = io.StringIO()
    configure_logging(settings, stream=stream)
    logging.getLogger("wxkf.test").info("once")
    assert len(stream.getvalue().splitlines()) == 1


def test_log_level_is_respected(tmp_path: Path, restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(make_settings(tmp_path, log_level="warning"), stream=stream)
    logger = logging.getLogger("wxkf.test")
    logger.info("hidden")
    logger.warning("shown")
    assert [json.loads(x)["msg"] for x in stream.getvalue().splitlines()] == ["shown"]


def test_secret_values_lists_every_secret_field(tmp_path: Path) -> None:
    values = set(secret_values(make_settings(tmp_path)))
    assert set(SECRETS) <= values


def test_unknown_context_field_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log context"), log_context(customer="x"):
        pass


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("url?corpid=a&corpsecret=S3cr3t&x=1", "url?corpid=a&corpsecret=***&x=1"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ('{"secret": "zzz"}', '{"secret": "***"}'),
        ("nothing to hide", "nothing to hide"),
        ("{'token': 'ENCxyz', 'n': 1}", "{'token': '***', 'n': 1}"),
        (
            "Job kf:sync_account[1](token='ENCabc', open_kfid='wk1')",
            "Job kf:sync_account[1](token='***', open_kfid='wk1')",
        ),
    ],
)
def test_redactor_patterns(raw: str, expected: str) -> None:
    assert Redactor()(raw) == expected


def test_longer_secret_is_removed_whole() -> None:
    assert Redactor(["abc", "abcdef"])("x abcdef y") == f"x {REDACTED} y"


def test_a_short_secret_does_not_rewrite_ordinary_words() -> None:
    """A WECOM_TOKEN of `tok` once turned a migration line into "access_***en cache"."""
    redact = Redactor(["tok"])
    assert redact("core: the shared WeCom access_token cache") == "core: the shared WeCom access_token cache"
    assert redact("token is tok.") == f"token is {REDACTED}."
    assert redact("url?a=1%26tok") == f"url?a=1%26{REDACTED}"  # URL-encoded neighbours still count


def test_a_database_outage_is_logged_in_one_line_not_a_traceback(
    tmp_path: Path, restore_logging: None
) -> None:
    import psycopg

    stream = io.StringIO()
    configure_logging(make_settings(tmp_path), stream=stream)
    try:
        try:
            raise psycopg.OperationalError("connection failed: the database system is shutting down")
        except psycopg.OperationalError as exc:
            raise RuntimeError("Database error.") from exc
    except RuntimeError:
        logging.getLogger("procrastinate.utils").exception("listener error")
    [line] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert "exc" not in line
    assert "listener error" in line["msg"]
    assert "the database system is shutting down" in line["msg"]
