"""The error catalog: cause and fix for the errcodes operators meet (placeholder until filled)."""

from __future__ import annotations


def hint_for(errcode: int, errmsg: str = "") -> str:
    """A one-paragraph cause and fix for `errcode`, Chinese first, English beside it."""
    return ""
