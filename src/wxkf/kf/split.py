"""Split a long answer into WeCom text messages at sentence boundaries, within the reply budget.

wecom-api §4: one text message is at most 2048 bytes (UTF-8), and at most 5 messages may follow a
customer message. An answer that needs more parts than the budget allows is cut at the last
sentence that fits and marked with "…", so the 6th message is never produced.
"""

from __future__ import annotations

import re

MAX_TEXT_BYTES = 2048  # wecom-api §4
ELLIPSIS = "…"

# A sentence ends after Chinese terminal punctuation, after a newline, or after Latin terminal
# punctuation followed by whitespace ("3.5" and "e.g." inside a word do not end a sentence).
_SENTENCE_END = re.compile(r"(?<=[。！？；…\n])|(?<=[.!?;]\s)")
_SOFT_BREAK = re.compile(r"(?<=[，、,：:\s])")


def byte_len(text: str) -> int:
    return len(text.encode("utf-8"))


def sentences(text: str) -> list[str]:
    """The sentences of `text`, each keeping its punctuation and trailing whitespace."""
    parts = [p for p in _SENTENCE_END.split(text) if p]
    # Attach whitespace-only pieces to the sentence before them.
    merged: list[str] = []
    for part in parts:
        if merged and not part.strip():
            merged[-1] += part
        else:
            merged.append(part)
    return merged


def _cut_to_bytes(text: str, max_bytes: int) -> tuple[str, str]:
    """Cut `text` into a head of at most `max_bytes` bytes (at a soft break if one is near) and the rest."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text, ""
    head = raw[:max_bytes].decode("utf-8", errors="ignore")  # never split a character
    breaks = [m.start() for m in _SOFT_BREAK.finditer(head) if m.start() > len(head) // 2]
    if breaks:
        head = head[: breaks[-1]]
    return head, text[len(head) :]


def _pieces(text: str, max_bytes: int) -> list[str]:
    """Sentences, with any sentence longer than one message cut into message-sized pieces."""
    pieces: list[str] = []
    for sentence in sentences(text):
        rest = sentence
        while byte_len(rest) > max_bytes:
            head, rest = _cut_to_bytes(rest, max_bytes)
            pieces.append(head)
        if rest:
            pieces.append(rest)
    return pieces


def split_text(text: str, max_parts: int, max_bytes: int = MAX_TEXT_BYTES) -> list[str]:
    """Pack `text` into at most `max_parts` messages of at most `max_bytes` bytes each.

    Returns [] for blank text or `max_parts < 1`. When the text does not fit, the last part ends
    with "…" where the cut was made.
    """
    text = text.strip()
    if not text or max_parts < 1:
        return []
    parts: list[str] = []
    current = ""
    for piece in _pieces(text, max_bytes):
        if current and byte_len(current + piece) > max_bytes:
            parts.append(current)
            current = ""
        current += piece
    if current:
        parts.append(current)
    parts = [p.strip() for p in parts if p.strip()]
    if len(parts) <= max_parts:
        return parts
    kept = parts[:max_parts]
    kept[-1] = _with_suffix(kept[-1], ELLIPSIS, max_bytes)
    return kept


def _with_suffix(text: str, suffix: str, max_bytes: int) -> str:
    """`text` + `suffix` within `max_bytes`, dropping whole trailing sentences (or bytes) to make room."""
    if byte_len(text + suffix) <= max_bytes:
        return text + suffix
    room = max_bytes - byte_len(suffix)
    kept = ""
    for sentence in sentences(text):
        if byte_len(kept + sentence) > room:
            break
        kept += sentence
    if not kept.strip():
        kept, _ = _cut_to_bytes(text, room)
    return kept.rstrip() + suffix


def add_closing_hint(parts: list[str], hint: str, max_bytes: int = MAX_TEXT_BYTES) -> list[str]:
    """Append the closing hint to the last part (it is the budget's last message), shortening it if needed."""
    if not parts or not hint.strip():
        return parts
    return [*parts[:-1], _with_suffix(parts[-1], "\n\n" + hint.strip(), max_bytes)]
