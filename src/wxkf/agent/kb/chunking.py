"""Split sections of a document into chunks for retrieval.

A chunk never crosses a heading: it belongs to one section and keeps that section's heading path
("退换货 > 七天无理由退货") as context. Inside a section, text is cut at Chinese and Latin sentence
ends (。！？；!?; and newlines), packed up to `max_chars`, and each chunk after the first starts with
the previous chunk's last sentence when it fits in `overlap_chars`, so an answer cut in two keeps
its context. A single sentence longer than the cap is cut hard, with the same overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHARS = 400
OVERLAP_CHARS = 80

_SENTENCE = re.compile(r"[^。！？；!?;\n]*(?:[。！？；!?;]+[”’」』）)\"']*|\n|$)")


@dataclass(frozen=True)
class Section:
    """Body text under one heading path (empty path: text before any heading)."""

    headings: tuple[str, ...]
    body: str


@dataclass(frozen=True)
class Chunk:
    heading: str  # the heading path joined with " > "
    text: str

    @property
    def indexed_text(self) -> str:
        """What is embedded and indexed: the heading path gives a short answer its question."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, each with its closing punctuation; blank lines dropped."""
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def _hard_split(sentence: str, max_chars: int, overlap: int) -> list[str]:
    step = max(1, max_chars - overlap)
    return [sentence[i : i + max_chars] for i in range(0, max(1, len(sentence) - overlap), step)]


def chunk_section(
    section: Section, *, max_chars: int = MAX_CHARS, overlap_chars: int = OVERLAP_CHARS
) -> list[Chunk]:
    heading = " > ".join(h for h in section.headings if h)
    pieces: list[tuple[str, bool]] = []  # (sentence, ends its line)
    for line in section.body.splitlines():
        sentences = [
            part
            for sentence in split_sentences(line)
            for part in (
                _hard_split(sentence, max_chars, overlap_chars) if len(sentence) > max_chars else [sentence]
            )
        ]
        pieces.extend((s, i == len(sentences) - 1) for i, s in enumerate(sentences))
    chunks: list[str] = []
    current: list[tuple[str, bool]] = []
    size = 0
    for piece in pieces:
        if current and size + len(piece[0]) > max_chars:
            chunks.append(_join(current))
            tail = current[-1]
            current, size = ([tail], len(tail[0]) + 1) if len(tail[0]) <= overlap_chars else ([], 0)
            if current and size + len(piece[0]) > max_chars:
                current, size = [], 0
        current.append(piece)
        size += len(piece[0]) + 1  # counting the separator keeps the joined text within the cap
    if current:
        chunks.append(_join(current))
    return [Chunk(heading=heading, text=text) for text in chunks]


def _join(pieces: list[tuple[str, bool]]) -> str:
    # Lines stay lines; Chinese sentences join without spaces, Latin ones need one.
    out, ended_line = pieces[0]
    for sentence, ends_line in pieces[1:]:
        if ended_line:
            out += "\n"
        elif out[-1].isascii() and sentence[0].isascii():
            out += " "
        out += sentence
        ended_line = ends_line
    return out


def chunk_sections(
    sections: list[Section], *, max_chars: int = MAX_CHARS, overlap_chars: int = OVERLAP_CHARS
) -> list[Chunk]:
    return [
        chunk
        for section in sections
        for chunk in chunk_section(section, max_chars=max_chars, overlap_chars=overlap_chars)
    ]
