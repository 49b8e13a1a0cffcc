"""The frozen retrieval test set (benchmarks/data/frozen) has the shape its README promises."""

from __future__ import annotations

import re
from pathlib import Path

from wxkf.agent.kb.loaders import markdown_sections

FROZEN = Path(__file__).parents[2] / "benchmarks" / "data" / "frozen"
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def _bigrams(text: str) -> set[str]:
    return {run[i : i + 2] for run in _CJK.findall(text) for i in range(len(run) - 1)}


def _rows(name: str) -> list[list[str]]:
    lines = (FROZEN / name).read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def test_two_faqs_of_25_entries_or_more_in_other_domains() -> None:
    faqs = sorted(FROZEN.glob("*.md"))
    faqs = [f for f in faqs if f.name != "README.md"]
    assert len(faqs) >= 2
    for faq in faqs:
        entries = [s for s in markdown_sections(faq.read_text(encoding="utf-8")) if len(s.headings) == 3]
        assert len(entries) >= 25, faq.name


def test_80_questions_a_third_sharing_no_two_characters_with_their_entry() -> None:
    entries = {
        faq.name: {s.headings[-1]: s.body for s in markdown_sections(faq.read_text(encoding="utf-8"))}
        for faq in FROZEN.glob("*_faq.md")
    }
    questions = _rows("questions.tsv")
    assert len(questions) >= 80
    disjoint = 0
    for faq, entry, question in questions:
        assert entry in entries[faq], (faq, entry)
        disjoint += not (_bigrams(question) & _bigrams(f"{entry}\n{entries[faq][entry]}"))
    assert disjoint >= len(questions) / 3


def test_20_off_topic_questions() -> None:
    assert len(_rows("offtopic.tsv")) >= 20
