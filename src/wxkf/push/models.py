"""The push records as the API, the CLI and the tools read and write them (pydantic, validated)."""

from __future__ import annotations

import math
from datetime import datetime, time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wxkf.config import valid_timezone
from wxkf.push.conditions import ATTRIBUTE_NAME, FIELDS, Conditions
from wxkf.push.quiet import QuietHours
from wxkf.push.statuses import HistoryStatus, IntentStatus, MatchStatus, PushMode

Id = Annotated[str, Field(min_length=1, max_length=64)]
Short = Annotated[str, Field(max_length=64)]


class Owner(BaseModel):
    """A kf customer: the kf account and the customer's external_userid."""

    open_kfid: Id
    external_userid: Id


class IntentIn(Owner):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=50)]
    description: Annotated[str, Field(max_length=1000)] = ""
    conditions: Conditions = Field(default_factory=Conditions)
    threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    priority: Annotated[int, Field(ge=0, le=10)] = 0
    max_pushes_per_day: Annotated[int, Field(ge=1, le=20)] = 3
    template: Short | None = None
    expires_at: datetime | None = None

    @field_validator("name", "description")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("须带时区，如 2025-01-31T23:59:00+08:00 / needs a time zone offset")
        return value


class IntentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=50)] | None = None
    description: Annotated[str, Field(max_length=1000)] | None = None
    conditions: Conditions | None = None
    threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    priority: Annotated[int, Field(ge=0, le=10)] | None = None
    max_pushes_per_day: Annotated[int, Field(ge=1, le=20)] | None = None
    template: Short | None = None
    expires_at: datetime | None = None
    status: Literal["active", "paused"] | None = None


class Intent(Owner):
    id: int
    name: str
    description: str
    conditions: Conditions
    threshold: float
    priority: int
    max_pushes_per_day: int
    template: str | None
    status: IntentStatus
    expires_at: datetime | None
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime


AttributeValue = str | int | float


class ProfileIn(BaseModel):
    """A person in the company's database. Other typed fields go into `attributes`."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64)]
    external_ref: Short | None = None
    gender: Annotated[str, Field(max_length=16)] | None = None
    age: Annotated[int, Field(ge=0, le=150)] | None = None
    city: Short | None = None
    company: Annotated[str, Field(max_length=128)] | None = None
    position: Short | None = None
    industry: Short | None = None
    education: Short | None = None
    description: Annotated[str, Field(max_length=4000)] = ""
    tags: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=50
    )
    attributes: dict[str, AttributeValue] = Field(default_factory=dict, max_length=50)

    @field_validator("name", "description")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("gender", "city", "company", "position", "industry", "education", "external_ref")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(t.strip() for t in value if t.strip()))

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
        for key, item in value.items():
            if key in FIELDS:
                raise ValueError(f"「{key}」是固定字段，不能放在 attributes 里 / {key} is a field of its own")
            if not ATTRIBUTE_NAME.match(key):
                raise ValueError(f"属性名无效 / invalid attribute name {key!r}")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"属性 {key} 不是有限数字 / {key} is not a finite number")
            if isinstance(item, str) and len(item) > 200:
                raise ValueError(f"属性 {key} 超过 200 字 / {key} is over 200 characters")
        return value


class ProfilePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    gender: Annotated[str, Field(max_length=16)] | None = None
    age: Annotated[int, Field(ge=0, le=150)] | None = None
    city: Short | None = None
    company: Annotated[str, Field(max_length=128)] | None = None
    position: Short | None = None
    industry: Short | None = None
    education: Short | None = None
    description: Annotated[str, Field(max_length=4000)] | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=32)]] | None = Field(default=None, max_length=50)
    attributes: dict[str, AttributeValue] | None = Field(default=None, max_length=50)


class Profile(ProfileIn):
    model_config = ConfigDict(extra="ignore")

    id: int
    status: Literal["draft", "active", "deleted"]
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class Match(Owner):
    id: int
    intent_id: int
    intent_name: str
    profile_id: int
    profile_name: str
    score: float
    parts: dict[str, float]
    matched: list[dict[str, str]]
    explanation: str
    status: MatchStatus
    reason: str | None
    due_at: datetime | None
    number: int | None
    feedback: str | None
    created_at: datetime


class HistoryEntry(Owner):
    id: int
    match_id: int
    intent_id: int
    status: HistoryStatus
    reason: str | None
    explanation: str | None  # the reason, explained (Chinese first)
    due_at: datetime | None
    msgid: str | None
    delivery: str | None  # the outbox row's status once sent: pending / sent / failed
    at: datetime


class Preferences(BaseModel):
    """A customer's push preferences; unset fields take the PUSH_* defaults."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    quiet_hours: str = Field(
        default="22:00-08:00", description="HH:MM-HH:MM，可跨午夜；空：不设 / may cross midnight"
    )
    timezone: str = "Asia/Shanghai"
    daily_limit: Annotated[int, Field(ge=0, le=100)] = 10
    min_score: Annotated[float, Field(ge=0, le=1)] = 0.0
    digest_hour: Annotated[int, Field(ge=0, le=23)] | None = 9
    mode: PushMode = "instant"

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str) -> str:
        QuietHours.parse(value)
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return valid_timezone(value)

    @property
    def quiet(self) -> QuietHours | None:
        return QuietHours.parse(self.quiet_hours)

    def quiet_columns(self) -> tuple[time | None, time | None]:
        quiet = self.quiet
        return (quiet.start, quiet.end) if quiet else (None, None)


class PreferencesPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    quiet_hours: str | None = None
    timezone: str | None = None
    daily_limit: Annotated[int, Field(ge=0, le=100)] | None = None
    min_score: Annotated[float, Field(ge=0, le=1)] | None = None
    digest_hour: Annotated[int, Field(ge=-1, le=23)] | None = Field(default=None, description="-1: no digest")
    mode: PushMode | None = None

    @model_validator(mode="after")
    def _something(self) -> PreferencesPatch:
        if not self.model_fields_set:
            raise ValueError("没有要修改的设置 / nothing to change")
        return self


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}
