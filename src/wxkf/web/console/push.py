"""Push as staff see it: customers' intents, their matches, what was pushed or held back and why,
the profiles and the templates — through `PushService`, as the REST API and `wxkf push …` do.

This module only turns the console's forms into push's models (checked by push's own validation,
the same messages as the API's) and push's records into what a page shows: status names and
reasons in words, Chinese first. No rule of push is decided here.

A form field with a NUL character is refused before it reaches push (PostgreSQL text cannot hold
U+0000): a clear 422, never a database error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from wxkf.push.conditions import Condition, parse_condition
from wxkf.push.errors import InvalidInput, refuse_nul, validated
from wxkf.push.models import HistoryEntry, Intent, IntentIn, Match, Owner, Preferences, ProfileIn
from wxkf.push.service import PushService
from wxkf.push.templates import MERGED_FIELDS, SINGLE_FIELDS, MiniProgramTemplate, Template, TextTemplate
from wxkf.validation import worded

INTENT_STATUS = {
    "draft": "待确认 / draft",
    "active": "匹配中 / active",
    "paused": "已暂停 / paused",
    "cancelled": "已取消 / cancelled",
}
MATCH_STATUS = {
    "pending": "待推送 / pending",
    "scheduled": "已排期 / scheduled",
    "pushed": "已推送 / pushed",
    "dropped": "未推送 / not pushed",
    "rejected": "复核否决 / rejected",
    "retired": "已撤回 / retired",
}
HISTORY_STATUS = {
    "scheduled": "已排期 / scheduled",
    "sent": "已发送 / sent",
    "dropped": "未发送 / not sent",
    "skipped": "跳过 / skipped",
}
DELIVERY_STATUS = {"pending": "发送中 / sending", "sent": "已送达 / delivered", "failed": "发送失败 / failed"}
# The matches page's three views: what may still go, what went, what did not (and why).
MATCH_VIEWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "waiting": ("等待推送 / waiting", ("pending", "scheduled")),
    "sent": ("已推送 / sent", ("pushed",)),
    "refused": ("未推送 / refused", ("dropped", "rejected", "retired")),
}
PLACEHOLDERS = {"single": SINGLE_FIELDS, "merged": MERGED_FIELDS}
PAGE_ROWS = 100
_LIST_SPLIT = re.compile(r"[,，、;；\n]")


@dataclass(frozen=True)
class IntentPage:
    """One intent as its page shows it."""

    intent: Intent
    required: list[str]
    preferred: list[str]
    keywords: list[str]
    excluded: list[str]
    matches: list[Match]
    history: list[HistoryEntry]
    preferences: Preferences


def split_list(value: str) -> list[str]:
    """Keywords, tags, excluded words: separated by commas (either width), 、, semicolons or lines."""
    return [part.strip() for part in _LIST_SPLIT.split(value) if part.strip()]


def _conditions(text: str, field: str, problems: list[str]) -> list[dict[str, Any]]:
    """One condition per line, written as the CLI's --require: city=北京, tags~创业, age>30 …"""
    parsed = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            parsed.append(parse_condition(line.strip()).model_dump())
        except ValidationError as exc:  # the condition's own rule, in its words
            problems += [worded(item, f"{field}「{line.strip()}」") for item in exc.errors()]
        except ValueError as exc:  # not in the shorthand at all
            problems.append(f"{field}: {exc}")
    return parsed


def intent_from_form(fields: Mapping[str, str]) -> IntentIn:
    """An intent from the console's form (its owner, name, conditions by line, keywords …)."""
    refuse_nul(fields)
    problems: list[str] = []
    conditions = {
        "required": _conditions(fields.get("required", ""), "required", problems),
        "preferred": _conditions(fields.get("preferred", ""), "preferred", problems),
        "keywords": split_list(fields.get("keywords", "")),
        "excluded": split_list(fields.get("excluded", "")),
    }
    if problems:
        raise InvalidInput(problems)
    data: dict[str, Any] = {
        "open_kfid": fields.get("open_kfid", "").strip(),
        "external_userid": fields.get("external_userid", "").strip(),
        "name": fields.get("name", ""),
        "description": fields.get("description", ""),
        "conditions": conditions,
        "max_pushes_per_day": fields.get("max_pushes_per_day", "").strip() or 3,
        "template": fields.get("template", "").strip() or None,
    }
    if fields.get("threshold", "").strip():
        data["threshold"] = fields["threshold"].strip()
    return validated(IntentIn, data)


def profile_from_form(fields: Mapping[str, str]) -> ProfileIn:
    """A profile from the console's form; empty fields are left out."""
    refuse_nul(fields)
    data: dict[str, Any] = {
        key: fields[key].strip()
        for key in ("external_ref", "gender", "age", "city", "company", "position", "industry", "education")
        if fields.get(key, "").strip()
    }
    data["name"] = fields.get("name", "")
    data["description"] = fields.get("description", "")
    data["tags"] = split_list(fields.get("tags", ""))
    return validated(ProfileIn, data)


async def template_from_form(
    push: PushService, fields: Mapping[str, str], cover: bytes | None, cover_name: str
) -> Template:
    """A template from the form. A card's cover is a new upload (kept by `save_thumb` in the media
    store) or, when editing, the cover it already has (`thumb`)."""
    refuse_nul(fields)
    if fields.get("kind") == "miniprogram":
        data: dict[str, Any] = {
            key: fields[key].strip()
            for key in ("appid", "pagepath", "title", "merged_pagepath", "merged_title")
            if fields.get(key, "").strip()
        }
        if cover:
            data["thumb"] = await push.save_thumb(cover, cover_name)
        elif fields.get("thumb", "").strip():
            data["thumb"] = fields["thumb"].strip()
        else:
            raise InvalidInput(["thumb: 小程序卡片需要封面图 / a card needs a cover image"])
        return validated(MiniProgramTemplate, data)
    texts = {key: fields[key] for key in ("content", "merged", "item") if fields.get(key, "").strip()}
    return validated(TextTemplate, texts)


def describe(conditions: Sequence[Condition]) -> list[str]:
    return [c.describe() for c in conditions]


async def intent_page(push: PushService, intent_id: int) -> IntentPage:
    """An intent, its matches with their scores, and every push decision about them."""
    intent = await push.get_intent(intent_id)
    conditions = intent.conditions
    return IntentPage(
        intent=intent,
        required=describe(conditions.required),
        preferred=describe(conditions.preferred),
        keywords=list(conditions.keywords),
        excluded=describe(conditions.excluded),
        matches=await push.list_matches(intent_id=intent_id, limit=PAGE_ROWS),
        history=await push.history(intent_id=intent_id, limit=PAGE_ROWS),
        preferences=await push.preferences(
            Owner(open_kfid=intent.open_kfid, external_userid=intent.external_userid)
        ),
    )


async def matches_in_view(push: PushService, view: str, customer: str | None) -> list[Match]:
    """The matches of one view (all when `view` is not one), newest first."""
    statuses = MATCH_VIEWS[view][1] if view in MATCH_VIEWS else (None,)
    found: list[Match] = []
    for status in statuses:
        found += await push.list_matches(status=status, external_userid=customer, limit=PAGE_ROWS)
    return sorted(found, key=lambda m: m.id, reverse=True)[:PAGE_ROWS]
