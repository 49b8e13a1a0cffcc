"""pydantic's validation errors in words a user reads: `字段: 中文说明 / English`.

Settings, the REST API, the console's forms, profile imports and the CLI all validate with pydantic,
whose messages are English only. `worded` turns one error item into the product's one line, chosen by
the item's `type` and `ctx`:

    missing                     必填，请补上
    int/float/bool_parsing      须为整数 / 须为数字 / 须为 true 或 false
    less_than(_equal), greater_than(_equal)     须小于（或等于）/ 大于（或等于）the bound in ctx
    literal_error, enum         只能是以下之一：the allowed values from ctx, joined by 、
    string_too_short/long, too_short/too_long   at least / at most so many characters / items
    json_invalid                不是有效的 JSON, with the parser's reason
    url_parsing                 不是有效的网址
    extra_forbidden             不认识的字段
    value_error                 our own validators' messages, as written (they are Chinese first);
                                a library's English-only one gets the generic lead
    anything else               输入不符合要求, then pydantic's own text

After the Chinese comes pydantic's English message, so the line reads `字段: 中文 / English`.

The input itself is never repeated: a rejected value may be a secret (a settings key, a token).
It sits below every package (config.py imports it) and imports nothing of wxkf.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_CJK = re.compile(r"[\u3400-\u9fff]")


def _allowed(ctx: Mapping[str, Any]) -> str:
    """pydantic's `'respect' or 'end'` (or `'a', 'b' or 'c'`) as `'respect'、'end'`."""
    expected = str(ctx.get("expected", ""))
    head, _, last = expected.rpartition(" or ")
    return "、".join([*head.split(", "), last]) if head else expected


def _bound(ctx: Mapping[str, Any], key: str) -> str:
    value = ctx.get(key, "")
    return format(value, "g") if isinstance(value, float) else str(value)


def _value_error(item: Mapping[str, Any]) -> str:
    message = str(item.get("msg", "")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    # Our validators already write Chinese first; a library's English-only message gets the lead.
    return message if _CJK.search(message) else f"取值无效 / {message}"


def _json(item: Mapping[str, Any]) -> str:
    detail = str((item.get("ctx") or {}).get("error", "")).strip()
    english = str(item.get("msg", "Invalid JSON"))
    if detail and detail not in english:
        english += f" ({detail})"
    return f"不是有效的 JSON，请检查引号、逗号和括号 / {english}"


_CHINESE: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "missing": lambda c: "必填，请补上",
    "int_parsing": lambda c: "须为整数",
    "int_type": lambda c: "须为整数",
    "int_from_float": lambda c: "须为整数，不能带小数",
    "float_parsing": lambda c: "须为数字",
    "float_type": lambda c: "须为数字",
    "bool_parsing": lambda c: "须为 true 或 false（是/否）",
    "bool_type": lambda c: "须为 true 或 false（是/否）",
    "less_than_equal": lambda c: f"须小于或等于 {_bound(c, 'le')}",
    "greater_than_equal": lambda c: f"须大于或等于 {_bound(c, 'ge')}",
    "less_than": lambda c: f"须小于 {_bound(c, 'lt')}",
    "greater_than": lambda c: f"须大于 {_bound(c, 'gt')}",
    "literal_error": lambda c: f"只能是以下之一：{_allowed(c)}",
    "enum": lambda c: f"只能是以下之一：{_allowed(c)}",
    "string_too_short": lambda c: f"至少 {c.get('min_length')} 个字符",
    "string_too_long": lambda c: f"最多 {c.get('max_length')} 个字符",
    "too_short": lambda c: f"至少需要 {c.get('min_length')} 项",
    "too_long": lambda c: f"最多 {c.get('max_length')} 项",
    "string_type": lambda c: "须为文本",
    "url_parsing": lambda c: "不是有效的网址",
    "extra_forbidden": lambda c: "不认识的字段，请删除或检查拼写",
}


def worded(item: Mapping[str, Any], field: str | None = None) -> str:
    """One pydantic error item (`ValidationError.errors()`, `RequestValidationError.errors()`) as
    `字段: 中文说明 / English`. `field` names the place as the caller's user knows it (an environment
    variable, a form field); by default the item's `loc` joined by dots. An empty `field` leaves the
    place out (a whole-model check that names its variables itself)."""
    if field is None:
        field = ".".join(str(p) for p in item.get("loc", ())) or "输入 / input"
    kind = str(item.get("type", ""))
    english = str(item.get("msg", ""))
    if kind in ("value_error", "assertion_error"):
        text = _value_error(item)
    elif kind == "json_invalid":
        text = _json(item)
    elif kind in _CHINESE:
        text = f"{_CHINESE[kind](item.get('ctx') or {})} / {english}"
    else:
        text = f"输入不符合要求 / {english}"
    return f"{field}: {text}" if field else text
