"""Several kf accounts in one deployment, each with its own settings, falling back to the global ones.

    directory = AccountDirectory(pool, settings)
    account = await directory.effective(open_kfid)     # every value resolved: the account's, else global
    account.persona, account.welcome_text, account.welcome_menu, account.session_policy,
    account.kb_silent, account.kb_collections, account.menu_option("menu_id")

| setting          | account key       | global (environment)          | meaning                                   |
|------------------|-------------------|-------------------------------|-------------------------------------------|
| persona / prompt | `persona`, `prompt` | LLM_PERSONA                 | who the bot is; extra instructions        |
| welcome          | `welcome_text`, `welcome_menu` | KF_WELCOME_TEXT, KF_WELCOME_MENU | the enter_session welcome (wecom-api §5) |
| session policy   | `session_policy`  | KF_SESSION_POLICY             | respect / end a human's session (§6)      |
| KB silent        | `kb_silent`, `kb_silent_text` | KF_UNKNOWN_ANSWER, KF_KB_SILENT_TEXT | handoff to a person, or say so and stay (`reply` = `say`) |
| KB scope         | `kb_collections`  | KF_KB_COLLECTIONS             | which knowledge-base collections answer   |

The account keys live in `kf_account_settings` (JSON), are changed with `wxkf accounts set`, and are
read through a short per-process cache (`ACCOUNT_CACHE_SECONDS`), so a change reaches every worker
within seconds without a query per message.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from wxkf.config import Settings
from wxkf.validation import worded
from wxkf.wecom.models import MENU_MAX_ITEMS

ACCOUNT_CACHE_SECONDS = 5.0
SHARED_COLLECTION = ""  # the knowledge base every account shares unless told otherwise


class MenuOption(BaseModel):
    """One option of a menu (a `click` item, wecom-api §4). A tap comes back as a text with its
    `menu_id` (§3) and is routed by `action`: `answer` (its text is the question), `human` (hand
    over to a person), `faq:<question>` (answer that question from the knowledge base) or
    `reply:<text>` (say exactly that)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    content: str = Field(min_length=1)
    action: str = "answer"

    @field_validator("action")
    @classmethod
    def _check_action(cls, value: str) -> str:
        kind, _, argument = value.partition(":")
        if kind in ("answer", "human") and not argument:
            return value
        if kind in ("faq", "reply") and argument.strip():
            return value
        raise ValueError(
            "action 须为 answer、human、faq:<问题> 或 reply:<文字> / action must be answer, human, "
            "faq:<question> or reply:<text>"
        )


class WelcomeMenu(BaseModel):
    model_config = ConfigDict(extra="forbid")

    options: list[MenuOption] = Field(min_length=1, max_length=MENU_MAX_ITEMS)
    tail_content: str | None = None

    def msgmenu(self, head_content: str) -> dict[str, Any]:
        """The msgmenu body (wecom-api §4) with `head_content` as its first line."""
        body: dict[str, Any] = {
            "list": [{"type": "click", "click": {"id": o.id, "content": o.content}} for o in self.options]
        }
        if head_content:
            body["head_content"] = head_content
        if self.tail_content:
            body["tail_content"] = self.tail_content
        return body


class AccountSettings(BaseModel):
    """What one account overrides; None falls back to the global setting."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None  # the operator's label for the account
    persona: str | None = None
    prompt: str | None = None
    welcome_text: str | None = None
    welcome_menu: WelcomeMenu | None = None
    session_policy: Literal["respect", "end"] | None = None
    kb_silent: Literal["handoff", "say", "reply"] | None = None  # `reply`: `say` by its older name
    kb_silent_text: str | None = None
    kb_collections: list[str] | None = None


class EffectiveAccount(BaseModel):
    """An account's settings with every fallback applied; `sources` says where each came from."""

    open_kfid: str
    name: str = ""
    persona: str = ""
    prompt: str = ""
    welcome_text: str = ""
    welcome_menu: WelcomeMenu | None = None
    session_policy: Literal["respect", "end"] = "respect"
    kb_silent: Literal["handoff", "say", "reply"] = "handoff"
    kb_silent_text: str = ""
    kb_collections: list[str] = Field(default_factory=lambda: [SHARED_COLLECTION])
    sources: dict[str, str] = Field(default_factory=dict)

    def menu_option(self, menu_id: str) -> MenuOption | None:
        if self.welcome_menu is None:
            return None
        return next((o for o in self.welcome_menu.options if o.id == menu_id), None)


class AccountSettingsError(ValueError):
    """An account setting is invalid; the message names it and the fix."""


def global_defaults(settings: Settings) -> dict[str, Any]:
    menu = None
    if settings.kf_welcome_menu.strip():
        menu = WelcomeMenu.model_validate_json(settings.kf_welcome_menu)
    return {
        "persona": settings.llm_persona,
        "prompt": "",
        "welcome_text": settings.kf_welcome_text,
        "welcome_menu": menu,
        "session_policy": settings.kf_session_policy,
        "kb_silent": settings.kf_unknown_answer,  # one concept: the account's, else KF_UNKNOWN_ANSWER
        "kb_silent_text": settings.kf_kb_silent_text,
        "kb_collections": [c.strip() for c in settings.kf_kb_collections.split(",")]
        if settings.kf_kb_collections.strip()
        else [SHARED_COLLECTION],
    }


def resolve(open_kfid: str, own: AccountSettings, settings: Settings) -> EffectiveAccount:
    values: dict[str, Any] = {"open_kfid": open_kfid, "name": own.name or ""}
    sources: dict[str, str] = {}
    for key, fallback in global_defaults(settings).items():
        mine = getattr(own, key)
        values[key] = fallback if mine is None else mine
        sources[key] = "global" if mine is None else "account"
    return EffectiveAccount(**values, sources=sources)


def parse_changes(pairs: dict[str, str]) -> dict[str, Any]:
    """`key=value` pairs from the command line: JSON where a field needs it (menus, lists), an empty
    value to go back to the global setting. Raises `AccountSettingsError` naming the key."""
    changes: dict[str, Any] = {}
    for key, raw in pairs.items():
        if key not in AccountSettings.model_fields:
            known = ", ".join(AccountSettings.model_fields)
            raise AccountSettingsError(f"未知的设置 {key!r}，可用：{known} / unknown setting {key!r}")
        if raw == "":
            changes[key] = None
        elif key == "kb_collections":
            changes[key] = [c.strip() for c in raw.split(",")]
        elif key == "welcome_menu":
            try:
                changes[key] = json.loads(raw)
            except ValueError:
                raise AccountSettingsError(
                    'welcome_menu 须为 JSON，如 {"options": [{"id": "track", "content": "查物流"}]} / '
                    "welcome_menu must be JSON"
                ) from None
        else:
            changes[key] = raw
    return changes


def validated(current: dict[str, Any], changes: dict[str, Any]) -> AccountSettings:
    merged = {k: v for k, v in {**current, **changes}.items() if v is not None}
    try:
        return AccountSettings.model_validate(merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        raise AccountSettingsError(
            f"设置 {field} 不正确 / invalid setting {field}: {worded(error, '')}"
        ) from None


_GET = "SELECT settings FROM kf_account_settings WHERE open_kfid = %s"
_ALL = "SELECT open_kfid, settings, updated_at FROM kf_account_settings ORDER BY open_kfid"
_PUT = """
INSERT INTO kf_account_settings (open_kfid, settings) VALUES (%s, %s)
ON CONFLICT (open_kfid) DO UPDATE SET settings = EXCLUDED.settings, updated_at = now()
"""


class AccountDirectory:
    """Per-account settings in PostgreSQL, resolved against the global settings."""

    def __init__(self, pool: AsyncConnectionPool[Any], settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
        self._cache: dict[str, tuple[float, EffectiveAccount]] = {}

    async def own(self, open_kfid: str) -> AccountSettings:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_GET, (open_kfid,))).fetchone()
        return AccountSettings.model_validate(row[0] if row else {})

    async def effective(self, open_kfid: str) -> EffectiveAccount:
        cached = self._cache.get(open_kfid)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        account = resolve(open_kfid, await self.own(open_kfid), self.settings)
        self._cache[open_kfid] = (time.monotonic() + ACCOUNT_CACHE_SECONDS, account)
        return account

    async def all(self) -> list[tuple[str, AccountSettings]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_ALL)
            return [
                (r["open_kfid"], AccountSettings.model_validate(r["settings"])) for r in await cur.fetchall()
            ]

    async def update(self, open_kfid: str, changes: dict[str, Any]) -> AccountSettings:
        """Apply `changes` (None: back to global) and store them; nothing changes when one is invalid."""
        current = (await self.own(open_kfid)).model_dump(exclude_none=True)
        new = validated(current, changes)
        async with self.pool.connection() as conn:
            await conn.execute(_PUT, (open_kfid, new.model_dump_json(exclude_none=True)))
        self._cache.pop(open_kfid, None)
        return new
