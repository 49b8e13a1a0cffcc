"""Terms of Chinese-and-Latin text, shared by the hashing embedder and the lexical index.

Chinese has no spaces, so a text's terms are its CJK characters (unigrams) and adjacent pairs
(bigrams) — bigrams carry most of the meaning (退货, 运费, 发票) — plus Latin words and numbers,
lowercased. Function words that every question contains (的, 吗, 怎么, 请问 …) are dropped so they
neither match unrelated passages nor dilute the real terms.
"""

from __future__ import annotations

import re
from collections import Counter

_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[A-Za-z0-9]+(?:[.'][A-Za-z0-9]+)*")
_CJK_START = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

_STOPWORDS = """
的 了 吗 呢 吧 啊 呀 嘛 哦 么 是 我 你 您 他 她 它 们 在 这 那 个 和 与 及 或 就 都 也 又 还 着 把 被 让 给 得 地
怎么 怎样 怎么样 什么 如何 为何 为什么 哪里 哪些 请问 一下 可以 能否 是否 是不是 可不可以 能不能
我们 你们 我的 你的 您的 一个 这个 那个 这样 那样 有没 没有 还是 需要 想要 现在 时候 的话
a an the is are was be to of and or in on for it i you we my your do does how what can
"""
# Particles, pronouns and question scaffolding: every question has them, no answer is about them.
STOPWORDS = frozenset(_STOPWORDS.split())


def is_cjk(term: str) -> bool:
    return bool(_CJK_START.match(term))


def term_counts(text: str) -> Counter[str]:
    """Every term of `text` with its count: CJK unigrams and bigrams, Latin words; no stopwords."""
    counts: Counter[str] = Counter()
    for match in _RUN.finditer(text):
        run = match.group()
        if is_cjk(run):
            counts.update(run)
            counts.update(run[i : i + 2] for i in range(len(run) - 1))
        else:
            counts[run.lower()] += 1
    for stop in STOPWORDS.intersection(counts):
        del counts[stop]
    return counts


def lexical_terms(text: str) -> list[str]:
    """The terms the lexical index matches on: bigrams and words, and characters standing alone.

    CJK unigrams inside longer runs are left to the vector half: on their own they match nearly
    every passage.
    """
    terms: dict[str, None] = {}
    for match in _RUN.finditer(text):
        run = match.group()
        if not is_cjk(run):
            terms[run.lower()] = None
        elif len(run) == 1:
            terms[run] = None
        else:
            for i in range(len(run) - 1):
                terms[run[i : i + 2]] = None
    return [t for t in terms if t not in STOPWORDS]
