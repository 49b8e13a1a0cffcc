"""Doctor's settings check: what is missing or malformed is named, with where to copy it from."""

from __future__ import annotations

from pathlib import Path

import pytest

from wxkf.config import Settings
from wxkf.ops.doctor import check_settings_load, settings_result

AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


def complete(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "wecom_corp_id": "ww0123456789",
        "wecom_kf_secret": "kf-secret",
        "wecom_token": "Token42",
        "wecom_aes_key": AES_KEY,
        "llm_api_key": "sk-key",
        "wxkf_public_url": "https://kf.example.com/",
        "wxkf_data_dir": tmp_path,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_complete_settings_pass(tmp_path: Path) -> None:
    result = settings_result(complete(tmp_path))
    assert result.status == "ok"


def test_missing_wecom_settings_fail_and_name_the_console_place(tmp_path: Path) -> None:
    result = settings_result(Settings(_env_file=None, wxkf_data_dir=tmp_path))
    assert result.status == "fail"
    assert "WECOM_CORP_ID（我的企业 → 企业ID）" in result.detail
    assert "WECOM_KF_SECRET" in result.detail
    assert "WECOM_TOKEN / WECOM_AES_KEY" in result.detail
    assert "企业微信管理后台" in result.fix


def test_missing_llm_key_and_public_url_only_warn(tmp_path: Path) -> None:
    result = settings_result(complete(tmp_path, llm_api_key=None, wxkf_public_url=""))
    assert result.status == "warn"
    assert "LLM_API_KEY" in result.detail
    assert "WXKF_PUBLIC_URL" in result.detail


def test_malformed_settings_become_a_failed_row_not_an_exit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("WECOM_AES_KEY", "too-short")
    monkeypatch.setenv("WXKF_PUBLIC_URL", "kf.example.com")
    settings, result = check_settings_load()
    assert settings is None
    assert result.status == "fail"
    assert "WECOM_AES_KEY 必须是 43 个字母或数字" in result.detail
    assert "WXKF_PUBLIC_URL 必须以 http:// 或 https:// 开头" in result.detail
    assert "too-short" not in result.detail + result.fix


def test_public_url_loses_its_trailing_slash(tmp_path: Path) -> None:
    assert complete(tmp_path).wxkf_public_url == "https://kf.example.com"
