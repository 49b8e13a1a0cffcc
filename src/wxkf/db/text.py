"""Text for PostgreSQL: its text and jsonb types cannot hold U+0000, which customers, nicknames and
models can all send. Every outside text that is stored goes through here, so one NUL never fails the
statement that carries a whole batch (an account's sync, a customer's reply)."""

from __future__ import annotations

import json
from typing import Any


def without_nul(value: Any) -> Any:
    """`value` with every U+0000 removed from its strings, in lists and dicts too (keys included)."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nul(v) for v in value]
    return value


def db_json(value: Any, **options: Any) -> str:
    """`json.dumps` of `value` without U+0000, for a jsonb or text column. On the sync's hot path the
    value is walked only when its JSON holds the escape (a NUL, or a typed backslash-u0000)."""
    text = json.dumps(value, **options)
    return json.dumps(without_nul(value), **options) if "\\u0000" in text else text
