"""The frozen retrieval test sets (benchmarks/data/frozen, frozen2, frozen3, frozen4) have the shape their READMEs promise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wxkf.agent.kb.loaders import markdown_sections

DATA = Path(__file__).parents[2] / "benchmarks" / "data"
SETS = pytest.mark.parametrize(
    "frozen", [DATA / "frozen", DATA / "frozen2", DATA / "frozen3", DATA / "frozen4"], ids=lambda p: p.name
)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def _bigrams(text: str) -> set[str]:
    return {run[i : i + 2] for run in _CJK.findall(text) for i in range(len(run) - 1)}


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


@SETS
def test_two_faqs_of_25_entries_or_more_in_other_domains(frozen: Path) -> None:
    faqs = sorted(frozen.glob("*_faq.md"))
    assert len(faqs) >= 2
    for faq in faqs:
        entries = [s for s in markdown_sections(faq.read_text(encoding="utf-8")) if len(s.headings) == 3]
        assert len(entries) >= 25, faq.name


@SETS
def test_80_questions_a_third_sharing_no_two_characters_with_their_entry(frozen: Path) -> None:
    entries = {
        faq.name: {s.headings[-1]: s.body for s in markdown_sections(faq.read_text(encoding="utf-8"))}
        for faq in frozen.glob("*_faq.md")
    }
    questions = _rows(frozen / "questions.tsv")
    assert len(questions) >= 80
    disjoint = 0
    for faq, entry, question in questions:
        assert entry in entries[faq], (faq, entry)
        disjoint += not (_bigrams(question) & _bigrams(f"{entry}\n{entries[faq][entry]}"))
    assert disjoint >= len(questions) / 3


@SETS
def test_20_off_topic_questions(frozen: Path) -> None:
    assert len(_rows(frozen / "offtopic.tsv")) >= 20
