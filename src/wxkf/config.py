"""Settings: one validated object, read from the environment and `.env`.

Every error names the variable and the fix (Chinese first, English beside it). Secrets are held as
`SecretStr`, so they never appear in `repr`, logs, errors or CLI output.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")

DEEPSEEK_BASE_URL = "https://api.deepseek.com"


def valid_timezone(value: str) -> str:
    """`value` when it names an IANA time zone, else a ValueError saying so."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"不是有效的时区名（如 Asia/Shanghai）/ unknown time zone {value!r}") from None
    return value


class SettingsError(Exception):
    """The settings are invalid; `problems` holds one readable line per variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("配置错误 / invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


class Settings(BaseSettings):
    """All of wxkf's configuration. Build it with `load_settings()` to get readable errors."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # WeCom (企业微信)
    wecom_corp_id: str = ""
    wecom_kf_secret: SecretStr | None = None
    wecom_contact_secret: SecretStr | None = None
    wecom_agent_id: int | None = None
    wecom_agent_secret: SecretStr | None = None
    wecom_token: SecretStr | None = None
    wecom_aes_key: SecretStr | None = None
    wecom_api_base: str = "https://qyapi.weixin.qq.com"

    # Storage
    database_url: SecretStr | None = None
    wxkf_data_dir: Path = Path("./var")

    # The public base URL WeCom reaches this service at (e.g. https://kf.example.com); the callback
    # is `<it>/wecom/callback`. Optional: `wxkf doctor` uses it to send a signed URL verification.
    wxkf_public_url: str = ""

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_content: bool = False

    # Embeddings for the knowledge base (OpenAI-compatible /embeddings); unset → the offline hashing embedder
    embedding_base_url: str | None = None
    embedding_api_key: SecretStr | None = None
    embedding_model: str | None = None
    embedding_dimensions: int | None = None
    embedding_timeout_seconds: float = 30.0

    # LLM (OpenAI-compatible; DeepSeek by default)
    llm_base_url: str = DEEPSEEK_BASE_URL
    llm_api_key: SecretStr | None = Field(default=None)
    deepseek_api_key: SecretStr | None = None
    llm_model: str = "deepseek-chat"
    llm_timeout_seconds: float = 30.0
    llm_max_retries: int = 2
    llm_persona: str = ""  # empty: the default persona in wxkf.agent.prompts
    llm_max_tokens: int = 1024
    llm_memory_tokens: int = 1500  # budget for the conversation's recent turns in the prompt

    # Customer contact (客户联系, wecom-api §9). WeCom caps how many group messages each customer
    # receives; the rule changed by revision and the admin can pick one in 群发助手-设置群发规则
    # (当月天数 per month / 7 per week / 1 per day). The default, 1 per natural day, fits inside every
    # current rule, so a send this check allows is never refused by WeCom with status 3.
    contact_receive_cap_period: Literal["day", "week", "month"] = "day"
    contact_receive_cap_count: int = Field(default=1, ge=0)  # 0 with "month" = 当月天数 (days in month)
    contact_timezone: str = "Asia/Shanghai"  # WeCom counts natural days in China time
    contact_staff_userids: str = ""  # comma-separated members offered the sending tools
    contact_customer_cache_ttl_seconds: int = Field(default=3600, ge=0)
    contact_confirmation_ttl_seconds: int = Field(default=900, gt=0)

    # Conversation pipeline (wxkf.kf). wecom-api §4/§6: what the bot does when a human serves.
    kf_session_policy: Literal["respect", "end"] = "respect"
    kf_pause_minutes: float = Field(default=30.0, ge=0)  # bot stays quiet after a servicer wrote
    kf_debounce_seconds: float = Field(default=1.5, ge=0)  # a burst in this window is answered together
    kf_history_max_age_minutes: float = Field(default=10.0, ge=0)  # first sync skips older messages
    kf_welcome_text: str = "您好，我是智能客服，请问有什么可以帮您？"  # empty: no welcome message
    # Added to the budget's last message (wecom-api §4); empty: no hint.
    kf_closing_hint: str = "如需继续咨询，请再给我们发一条消息。"
    kf_state_cache_seconds: float = Field(default=10.0, ge=0)
    kf_accounts: str = ""  # comma-separated open_kfids served; empty: every account that calls back
    kf_worker_concurrency: int = Field(default=16, ge=1)
    kf_poll_interval_seconds: float = Field(default=0.1, gt=0)

    # The REST API under /api/ (push intents, profiles, …): callers send `Authorization: Bearer <key>`.
    # Unset: the API refuses every request (401) and says how to enable it.
    wxkf_api_key: SecretStr | None = None

    # Temporary media (wecom-api §8): a media_id lives 3 days; an upload is reused until this many
    # hours before its expiry, then uploaded again, so a message never carries a media_id about to expire.
    media_refresh_margin_hours: float = Field(default=12.0, ge=0, le=48)

    # Push notifications (wxkf.push, docs/push.md): a customer's intents matched against profiles.
    # Score = weighted mean of the parts that apply (preferred conditions, keywords, semantic similarity):
    # what the customer named outright weighs more than a resemblance of texts.
    push_weight_preferred: float = Field(default=0.35, ge=0)
    push_weight_keywords: float = Field(default=0.35, ge=0)
    push_weight_semantic: float = Field(default=0.3, ge=0)
    push_default_threshold: float = Field(default=0.6, ge=0, le=1)  # an intent's threshold unless given
    push_semantic_candidates: int = Field(default=50, ge=1, le=1000)  # nearest profiles per intent (HNSW)
    push_top_candidates: int = Field(default=5, ge=1, le=100)  # new matches recorded per intent and run
    push_llm_rerank: bool = True  # with an LLM key: the model re-checks each new match (JSON, validated)
    push_weight_llm: float = Field(default=0.5, ge=0, le=1)  # the model's share of a re-ranked score
    # wecom-api §4: 5 messages per customer message. A push leaves this many to answer the customer.
    push_keep_for_replies: int = Field(default=1, ge=0, le=4)
    push_timezone: str = "Asia/Shanghai"  # a customer's time zone unless their preferences say otherwise
    push_quiet_hours: str = (
        "22:00-08:00"  # HH:MM-HH:MM in the customer's time zone, may cross midnight; empty: none
    )
    push_daily_limit: int = Field(default=10, ge=0)  # push messages per customer per local day
    push_min_score: float = Field(
        default=0.0, ge=0, le=1
    )  # a customer's floor on top of each intent's threshold
    push_digest_hour: int | None = Field(
        default=9, ge=0, le=23
    )  # the daily digest's local hour; None: no digest
    push_max_items: int = Field(default=5, ge=1, le=10)  # matches merged into one message
    # wecom-api §10: 10,000 calls per API per minute per corp; a push costs one send_msg (and maybe a
    # service_state/get): batches are spread to stay well under it.
    push_sends_per_minute: int = Field(default=1000, ge=1, le=5000)
    push_tick_cron: str = "* * * * *"  # how often scheduled pushes are checked (procrastinate periodic)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("wecom_aes_key")
    @classmethod
    def _check_aes_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() and not _AES_KEY_RE.match(value.get_secret_value()):
            raise ValueError(
                "WECOM_AES_KEY 必须是 43 个字母或数字（企业微信后台「接收消息」的 EncodingAESKey）/ "
                "must be exactly 43 letters or digits: copy EncodingAESKey from the callback settings"
            )
        return value

    @field_validator("wxkf_public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(
                "WXKF_PUBLIC_URL 必须以 http:// 或 https:// 开头（如 https://kf.example.com）/ "
                "must be an http(s) URL such as https://kf.example.com"
            )
        return value.rstrip("/")

    @field_validator("wecom_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() and not _TOKEN_RE.match(value.get_secret_value()):
            raise ValueError(
                "WECOM_TOKEN 最多 32 个字母或数字（回调配置中的 Token）/ "
                "must be 1-32 letters or digits: copy Token from the callback settings"
            )
        return value

    @field_validator("contact_timezone", "push_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        return valid_timezone(value)

    @field_validator("push_quiet_hours")
    @classmethod
    def _check_quiet_hours(cls, value: str) -> str:
        from wxkf.push.quiet import QuietHours

        QuietHours.parse(value)  # raises ValueError with the fix
        return value.strip()

    @field_validator("push_tick_cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f'不是有效的 cron 表达式（如 "* * * * *"）/ not a cron expression: {value!r}')
        return value

    @model_validator(mode="after")
    def _check_receive_cap(self) -> Settings:
        if self.contact_receive_cap_count == 0 and self.contact_receive_cap_period != "month":
            raise ValueError(
                "CONTACT_RECEIVE_CAP_COUNT=0（当月天数）只能与 CONTACT_RECEIVE_CAP_PERIOD=month 同用 / "
                "a count of 0 (days in the month) is only valid with period month"
            )
        return self

    @model_validator(mode="after")
    def _check_push_weights(self) -> Settings:
        if self.push_weight_preferred + self.push_weight_keywords + self.push_weight_semantic <= 0:
            raise ValueError(
                "PUSH_WEIGHT_PREFERRED / PUSH_WEIGHT_KEYWORDS / PUSH_WEIGHT_SEMANTIC 不能全为 0 / "
                "at least one of the push score weights must be above 0"
            )
        return self

    @model_validator(mode="after")
    def _corp_id_with_secrets(self) -> Settings:
        has_secret = any(
            s is not None and s.get_secret_value()
            for s in (self.wecom_kf_secret, self.wecom_contact_secret, self.wecom_agent_secret)
        )
        if has_secret and not self.wecom_corp_id:
            raise ValueError(
                "配置了 secret 但缺少 WECOM_CORP_ID（企业微信后台「我的企业」→ 企业ID）/ "
                "WECOM_CORP_ID is required when a secret is set: copy it from 我的企业 → 企业ID"
            )
        if self.wecom_agent_secret is not None and self.wecom_agent_id is None:
            raise ValueError(
                "配置了 WECOM_AGENT_SECRET 但缺少 WECOM_AGENT_ID（应用的 AgentId）/ "
                "WECOM_AGENT_ID is required with WECOM_AGENT_SECRET"
            )
        return self

    # Derived values -------------------------------------------------------------------------

    @property
    def llm_key(self) -> SecretStr | None:
        """The LLM key: `LLM_API_KEY`, or `DEEPSEEK_API_KEY` as the brief's deployments name it."""
        return self.llm_api_key or self.deepseek_api_key

    @property
    def contact_staff(self) -> frozenset[str]:
        """Members whose conversations may use the customer-contact sending tools."""
        return frozenset(u.strip() for u in self.contact_staff_userids.split(",") if u.strip())

    @property
    def callback_configured(self) -> bool:
        return bool(self.wecom_corp_id and self.wecom_token and self.wecom_aes_key)


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings, turning pydantic's errors into `SettingsError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = "/".join(str(p) for p in err["loc"]).upper()
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}" if loc else msg)
        raise SettingsError(problems) from None
