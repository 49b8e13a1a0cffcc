from __future__ import annotations

import pytest

from wxkf.config import SettingsError, load_settings

GOOD_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


def test_defaults_need_nothing_configured() -> None:
    settings = load_settings(_env_file=None)
    assert settings.wecom_api_base == "https://qyapi.weixin.qq.com"
    assert settings.llm_model == "deepseek-chat"
    assert not settings.callback_configured


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"wecom_aes_key": "short"}, "WECOM_AES_KEY"),
        ({"wecom_token": "x" * 33}, "WECOM_TOKEN"),
        ({"wecom_kf_secret": "s3cret-value"}, "WECOM_CORP_ID"),
        ({"log_level": "LOUD"}, "LOG_LEVEL"),
        ({"retention_inbound_days": 2}, "RETENTION_INBOUND_DAYS"),  # under sync_msg's 3 days
        ({"retention_outbox_days": 1}, "RETENTION_OUTBOX_DAYS"),
        ({"retention_contact_days": 7}, "RETENTION_CONTACT_DAYS"),  # under a month of receive cap
        ({"retention_cron": "every ten minutes"}, "RETENTION_CRON"),
        ({"database_pool_size": 1}, "DATABASE_POOL_SIZE"),
        ({"llm_timeout_seconds": -5}, "LLM_TIMEOUT_SECONDS"),
        ({"llm_max_retries": -3}, "LLM_MAX_RETRIES"),
        ({"llm_max_tokens": 0}, "LLM_MAX_TOKENS"),
        ({"embedding_timeout_seconds": 0}, "EMBEDDING_TIMEOUT_SECONDS"),
        ({"stt_timeout_seconds": -1}, "STT_TIMEOUT_SECONDS"),
        ({"llm_base_url": "notaurl"}, "LLM_BASE_URL"),
        ({"embedding_base_url": "ftp://x"}, "EMBEDDING_BASE_URL"),
        ({"stt_base_url": "localhost:9000"}, "STT_BASE_URL"),
    ],
)
def test_invalid_settings_name_the_variable(overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(_env_file=None, **overrides)
    assert variable in str(info.value)


def test_secrets_never_in_repr_or_errors() -> None:
    secret = "TopSecretKfValue123"
    settings = load_settings(
        _env_file=None, wecom_corp_id="ww1", wecom_kf_secret=secret, wecom_aes_key=GOOD_KEY
    )
    assert secret not in repr(settings)
    assert GOOD_KEY not in repr(settings)
    with pytest.raises(SettingsError) as info:
        load_settings(_env_file=None, wecom_kf_secret=secret, wecom_token="bad token!")
    assert secret not in str(info.value)
    assert "bad token!" not in str(info.value)


def test_deepseek_key_is_accepted_as_llm_key() -> None:
    settings = load_settings(_env_file=None, deepseek_api_key="sk-abc")
    assert settings.llm_key is not None
    assert settings.llm_key.get_secret_value() == "sk-abc"


def test_retention_zero_keeps_a_table_and_the_minimums_are_allowed() -> None:
    settings = load_settings(
        _env_file=None, retention_inbound_days=0, retention_outbox_days=4, retention_contact_days=32
    )
    assert (settings.retention_inbound_days, settings.retention_outbox_days) == (0, 4)


def test_debug_true_means_log_level_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """The troubleshooting guide tells operators to set DEBUG=true; it was silently ignored."""
    monkeypatch.setenv("DEBUG", "true")
    assert load_settings(_env_file=None).log_level == "DEBUG"
    monkeypatch.setenv("LOG_LEVEL", "WARNING")  # an explicit level wins
    assert load_settings(_env_file=None).log_level == "WARNING"
    monkeypatch.setenv("DEBUG", "false")
    monkeypatch.delenv("LOG_LEVEL")
    assert load_settings(_env_file=None).log_level == "INFO"


@pytest.mark.parametrize(
    ("menu", "reason"),
    [
        ('{"options": []}', "options"),  # at least one option
        ('{"options": [{"id": "a", "content": "查物流"}], "colour": "red"}', "colour"),  # unknown field
    ],
)
def test_a_bad_welcome_menu_says_what_is_wrong_with_it(menu: str, reason: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(_env_file=None, kf_welcome_menu=menu)
    message = str(info.value)
    assert "KF_WELCOME_MENU" in message
    assert reason in message
    assert "validation error for" not in message  # pydantic's heading, not a reason
