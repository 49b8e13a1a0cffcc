"""Push messages: text and mini-program templates with named placeholders, checked when saved.

A single match fills `content` (text) or `title` / `pagepath` (mini-program card) from
`SINGLE_FIELDS`; several matches for one customer in one window become one message, filled from
`MERGED_FIELDS` with one `item` line per match. Saving a template that names an unknown placeholder
fails with the name (「{score_pct}」不是可用的占位符); so does one that would not render.

Without a saved template named "default", the standard text below is used.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wxkf.kf.split import byte_len, split_text
from wxkf.push.errors import TemplateError

MAX_TEXT_BYTES = 2048  # wecom-api §4: one text message
MINIPROGRAM_TITLE_BYTES = 64  # wecom-api §4: miniprogram.title, cut by WeCom beyond
DEFAULT_TEMPLATE = "default"

# The standard text, with the reply numbers this service understands.
DEFAULT_CONTENT = (
    "🎯 找到匹配的联系人\n\n"
    "【{profile_name}】符合您的意图【{intent_name}】\n"
    "匹配度：{score}%\n"
    "{explanation}\n\n"
    "回复「查看{match_id}」了解详情"
)
DEFAULT_MERGED = (
    "🎯 为您找到 {count} 个新匹配\n\n{items}\n\n回复「查看+编号」了解详情；回复「不感兴趣」或「退订」管理推送"
)
DEFAULT_ITEM = "{match_id}. 【{profile_name}】{intent_name} · 匹配度 {score}%"
DEFAULT_MERGED_TITLE = "为您找到 {count} 个新匹配"

SINGLE_FIELDS = {
    "profile_name": "资料姓名 / the profile's name",
    "intent_name": "意图名称 / the intent's name",
    "score": "匹配度百分数，如 85 / the score in percent",
    "explanation": "匹配说明 / why it matches, in Chinese",
    "match_id": "客户回复用的编号（查看N）/ the number the customer replies with",
    "matched_conditions": "满足的条件，逗号分隔 / the conditions met",
    "profile_summary": "资料摘要：城市、公司、职位 / city, company, position",
    "city": "城市 / city",
    "company": "公司 / company",
    "position": "职位 / position",
}
MERGED_FIELDS = {
    "count": "本条消息包含的匹配数 / matches in this message",
    "items": "每个匹配一行（item 模板）/ one line per match",
    "match_ids": "编号，逗号分隔 / the numbers, comma-separated",
    "intent_names": "涉及的意图 / the intents concerned",
}
_SAMPLE: dict[str, Any] = {
    **{k: "示例" for k in SINGLE_FIELDS},
    "score": 85,
    "match_id": 1,
    "count": 3,
    "items": "1. 示例",
    "match_ids": "1,2,3",
    "intent_names": "示例",
}


class TextTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["text"] = "text"
    content: Annotated[str, Field(min_length=1, max_length=1500)] = DEFAULT_CONTENT
    merged: Annotated[str, Field(min_length=1, max_length=1500)] = DEFAULT_MERGED
    item: Annotated[str, Field(min_length=1, max_length=300)] = DEFAULT_ITEM


class MiniProgramTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["miniprogram"] = "miniprogram"
    appid: Annotated[str, Field(min_length=1, max_length=32)]
    pagepath: Annotated[str, Field(min_length=1, max_length=1024)]
    title: Annotated[str, Field(min_length=1, max_length=200)] = (
        "{profile_name} 符合您的意图【{intent_name}】"
    )
    merged_pagepath: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    merged_title: Annotated[str, Field(min_length=1, max_length=200)] = DEFAULT_MERGED_TITLE
    thumb: Annotated[
        str, Field(min_length=64, max_length=64, description="缩略图的 digest / the thumb's media digest")
    ]


Template = TextTemplate | MiniProgramTemplate

_PLACES = {
    "content": SINGLE_FIELDS,
    "item": SINGLE_FIELDS,
    "title": SINGLE_FIELDS,
    "pagepath": SINGLE_FIELDS,
    "merged": MERGED_FIELDS,
    "merged_title": MERGED_FIELDS,
    "merged_pagepath": MERGED_FIELDS,
}


def placeholders(text: str) -> list[str]:
    """The `{name}` placeholders of `text`; raises TemplateError for `{}`, `{0}`, `{a.b}`, a conversion
    (`!r`), a format spec (`:>9`) and bad braces."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(
            [f"花括号不成对（字面的花括号写成 {{{{ 或 }}}}）/ unbalanced braces: {exc}"]
        ) from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or name.isdigit() or "." in name or "[" in name:
            raise TemplateError(
                [f"占位符须是名字，如 {{profile_name}}，不能是「{{{name}}}」/ placeholders are names"]
            )
        if conversion:
            raise TemplateError([f"占位符「{{{name}}}」不能带 !{conversion} / no conversions"])
        if spec:  # a width such as :>999999999 would take gigabytes to render, here and at every push
            raise TemplateError([f"占位符「{{{name}}}」不能带格式「:{spec}」/ no format specs"])
        names.append(name)
    return names


def check(template: Template) -> Template:
    """Refuse unknown placeholders (naming each) and anything that would not render."""
    problems: list[str] = []
    for field, allowed in _PLACES.items():
        text = getattr(template, field, None)
        if not isinstance(text, str):
            continue
        try:
            names = placeholders(text)
        except TemplateError as exc:
            problems += [f"{field}: {p}" for p in exc.problems]
            continue
        for name in names:
            if name not in allowed:
                problems.append(
                    f"{field}: 「{{{name}}}」不是可用的占位符，可用：{', '.join(allowed)} / unknown placeholder "
                    f"{{{name}}}"
                )
        if problems:
            continue
        try:
            text.format_map(_SAMPLE)
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"{field}: 无法生成消息 / does not render: {exc}")
    if problems:
        raise TemplateError(problems, "模板无效 / invalid template")
    return template


@dataclass(frozen=True)
class Item:
    """One match as a message shows it."""

    match_id: int  # the customer-facing number
    profile_name: str
    intent_name: str
    score: float
    explanation: str
    matched: list[str]
    city: str = ""
    company: str = ""
    position: str = ""

    def values(self) -> dict[str, Any]:
        summary = "，".join(v for v in (self.city, self.company, self.position) if v)
        return {
            "profile_name": self.profile_name,
            "intent_name": self.intent_name,
            "score": round(self.score * 100),
            "explanation": self.explanation,
            "match_id": self.match_id,
            "matched_conditions": "，".join(self.matched),
            "profile_summary": summary,
            "city": self.city,
            "company": self.company,
            "position": self.position,
        }


def _merged_values(items: list[Item]) -> dict[str, Any]:
    return {
        "count": len(items),
        "match_ids": ",".join(str(i.match_id) for i in items),
        "intent_names": "、".join(dict.fromkeys(i.intent_name for i in items)),
    }


def _fit(text: str) -> str:
    """One text message: cut at a sentence within 2048 bytes (wecom-api §4), marked with …"""
    parts = split_text(text, 1, MAX_TEXT_BYTES)
    return parts[0] if parts else text


def render_text(template: TextTemplate, items: list[Item]) -> tuple[str, list[Item]]:
    """The message for `items` and the items it holds (those that did not fit wait for the next one)."""
    if len(items) == 1:
        return _fit(template.content.format_map(items[0].values())), items
    shown = list(items)
    while True:
        lines = "\n".join(template.item.format_map(i.values()) for i in shown)
        text = template.merged.format_map({**_merged_values(shown), "items": lines})
        if byte_len(text) <= MAX_TEXT_BYTES or len(shown) == 1:
            if len(shown) == 1:
                return _fit(template.content.format_map(shown[0].values())), shown
            return text, shown
        shown.pop()


def _title(text: str) -> str:
    raw = text.encode()
    return (
        text
        if len(raw) <= MINIPROGRAM_TITLE_BYTES
        else raw[:MINIPROGRAM_TITLE_BYTES].decode("utf-8", "ignore")
    )


def render_card(template: MiniProgramTemplate, items: list[Item], thumb_media_id: str) -> dict[str, str]:
    """The wecom-api §4 miniprogram body for `items` (one card, however many)."""
    if len(items) == 1:
        values = items[0].values()
        title, pagepath = template.title.format_map(values), template.pagepath.format_map(values)
    else:
        values = {**_merged_values(items), "items": ""}
        title = template.merged_title.format_map(values)
        pagepath = (template.merged_pagepath or template.pagepath).format_map(
            values if template.merged_pagepath else items[0].values()
        )
    return {
        "appid": template.appid,
        "title": _title(title),
        "pagepath": pagepath,
        "thumb_media_id": thumb_media_id,
    }
