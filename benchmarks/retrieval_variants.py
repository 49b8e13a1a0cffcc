"""Ranking variants over the two bundled models, measured offline on the development sets (tuning only).

Every chunk of the development sets' FAQs is embedded once with e5 and USE, as the knowledge base embeds it
(`passage`), and in other views: its FAQ question as a query, its FAQ question as a passage, and its heading
with each answer sentence. Every question is embedded once as a query. Variants are then scored in numpy:
the vector cosines mapped through each model's `similarity_range`, weighted, plus the lexical coverage the
store adds (the share of the question's IDF weight a chunk holds). With the default variant this reproduces
`e5_fused` of bench_retrieval.py on every set.

Never given a frozen set that has not been reported: the sets are named on the command line, and tuning
reads development sets only.

    .venv/bin/python benchmarks/retrieval_variants.py [--sets shop,frozen,frozen2,frozen3] [--cache F]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench_retrieval import FROZEN_SETS, chunks_of, entry_of, frozen_cases, shop_case
from wxkf.agent.kb.chunking import split_sentences
from wxkf.agent.kb.embedders import CorpusStats, E5Embedder, USEEmbedder, local_embedder
from wxkf.agent.kb.text import lexical_terms, term_counts

Array = np.ndarray[Any, np.dtype[np.float64]]
MODELS = {"e5": E5Embedder.SIMILARITY_RANGE, "use": USEEmbedder.SIMILARITY_RANGE}


@dataclass
class Case:
    """One FAQ's chunks in every view, its questions, and their vectors (model → view → matrix)."""

    name: str
    entries: list[str]
    chunk_terms: list[set[str]]
    sentence_of: list[int]  # for each sentence view, its chunk
    questions: list[tuple[str, str]]  # (entry, question)
    unanswerable: list[
        tuple[str, str]
    ]  # ("off" | "uncovered", question): the knowledge base should say nothing
    vectors: dict[str, dict[str, Array]] = field(default_factory=dict)


async def embed(sets: list[str]) -> list[Case]:
    faqs = [c for s in sets for c in ([shop_case(True)] if s == "shop" else frozen_cases(s))]
    models = {name: local_embedder(name) for name in MODELS}
    cases = []
    for faq in faqs:
        chunks = chunks_of(faq)
        heads = [entry_of(c.heading) for c in chunks]
        sentences = [(i, f"{heads[i]}\n{s}") for i, c in enumerate(chunks) for s in split_sentences(c.text)]
        case = Case(
            faq.name,
            heads,
            [set(term_counts(c.indexed_text)) for c in chunks],
            [i for i, _ in sentences],
            [(e, q) for e, q, _ in faq.questions],
            [("off", q) for q in faq.offtopic] + [("uncovered", q) for q in faq.uncovered],
        )
        for name, model in models.items():
            case.vectors[name] = {
                "passage": np.array(await model.embed([c.indexed_text for c in chunks])),
                "heading_query": np.array([await model.embed_query(h) for h in heads]),
                "sentence": np.array(await model.embed([t for _, t in sentences])),
                "question": np.array([await model.embed_query(q) for _, q in case.questions]),
                "unanswerable": np.array([await model.embed_query(q) for _, q in case.unanswerable]),
            }
        cases.append(case)
        print(f"embedded {faq.name}: {len(chunks)} chunks, {len(sentences)} sentences", flush=True)
    return cases


def coverage(case: Case, question: str) -> Array:
    stats = CorpusStats(len(case.chunk_terms), Counter(t for ts in case.chunk_terms for t in ts), 1)
    terms = lexical_terms(question)
    weights = [stats.idf(t) for t in terms]
    total = sum(weights)
    if not total:
        return np.zeros(len(case.entries))
    return np.array(
        [
            min(1.0, sum(w for t, w in zip(terms, weights, strict=True) if t in ts) / total)
            for ts in case.chunk_terms
        ]
    )


def scores(case: Case, index: int, variant: dict[str, float], view: str = "question") -> Array:
    """One question's score for every chunk under `variant` (see `VARIANTS`); `view`: "question" (an
    on-topic one, `case.questions[index]`) or "unanswerable" (`case.unanswerable[index]`)."""
    question = case.questions[index][1] if view == "question" else case.unanswerable[index][1]
    total = variant.get("lexical", 0.3) * coverage(case, question)
    for name, (low, high) in MODELS.items():
        weight = variant.get(name, 1.0 if name == "e5" else 0.0)
        if not weight:
            continue
        views = case.vectors[name]
        q = views[view][index]
        similarity = views["passage"] @ q
        if mix := variant.get("heading_query", 0.0):
            similarity = (1 - mix) * similarity + mix * (views["heading_query"] @ q)
        if mix := variant.get("sentence", 0.0):
            best = np.full(len(case.entries), -1.0)
            np.maximum.at(best, np.array(case.sentence_of, dtype=int), views["sentence"] @ q)
            similarity = (1 - mix) * similarity + mix * best
        if strength := variant.get("hubness", 0.0):
            gram = views["passage"] @ views["passage"].T
            np.fill_diagonal(gram, -1.0)
            hub = np.sort(gram, axis=1)[:, -5:].mean(axis=1)
            similarity = similarity - strength * (hub - hub.mean())
        total = total + weight * np.clip((similarity - low) / (high - low), 0.0, 1.0)
    return total


def hits(cases: list[Case], variant: dict[str, float]) -> tuple[float, float, dict[str, str]]:
    """Pooled hit@1 and hit@3 by entry, and each FAQ's own figures."""
    first = top3 = n = 0
    per_case = {}
    for case in cases:
        f = t = 0
        for index, (entry, _) in enumerate(case.questions):
            best: dict[str, float] = {}
            for e, s in zip(case.entries, scores(case, index, variant), strict=True):
                best[e] = max(best.get(e, -9.0), float(s))
            order = sorted(best, key=lambda e: -best[e])
            f += order[0] == entry
            t += entry in order[:3]
        per_case[case.name] = f"{f / len(case.questions):.3f} / {t / len(case.questions):.3f}"
        first, top3, n = first + f, top3 + t, n + len(case.questions)
    return first / n, top3 / n, per_case


def curve(cases: list[Case], variant: dict[str, float]) -> list[tuple[float, float, float, float]]:
    """(threshold, pooled on-topic recall@3, abstention on off-topic questions, on uncovered ones)."""
    on: list[tuple[float, bool]] = []  # (best score, entry in the top 3)
    for case in cases:
        for index, (entry, _) in enumerate(case.questions):
            best: dict[str, float] = {}
            for e, s in zip(case.entries, scores(case, index, variant), strict=True):
                best[e] = max(best.get(e, -9.0), float(s))
            order = sorted(best, key=lambda e: -best[e])
            on.append((best[order[0]], entry in order[:3]))
    unanswerable = [
        (kind, float(scores(c, i, variant, "unanswerable").max()))
        for c in cases
        for i, (kind, _) in enumerate(c.unanswerable)
    ]
    off = [best for kind, best in unanswerable if kind == "off"]
    uncovered = [best for kind, best in unanswerable if kind == "uncovered"] or [0.0]
    thresholds = [round(0.3 + 0.025 * i, 3) for i in range(41)]
    return [
        (
            t,
            sum(top3 and best >= t for best, top3 in on) / len(on),
            sum(best < t for best in off) / len(off),
            sum(best < t for best in uncovered) / len(uncovered),
        )
        for t in thresholds
    ]


VARIANTS: dict[str, dict[str, float]] = {
    "e5_fused as shipped": {},
    "e5 alone": {"lexical": 0.0},
    "e5 0.8 + USE 0.2, each mapped": {"e5": 0.8, "use": 0.2},
    "e5 + FAQ question as a query 0.3": {"heading_query": 0.3},
    "e5 + best answer sentence 0.3": {"sentence": 0.3},
    "e5, hubness correction 0.5": {"hubness": 0.5},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sets", default="shop,frozen,frozen2,frozen3")
    parser.add_argument("--cache", type=Path, help="keep the vectors here between runs")
    parser.add_argument("--grid", action="store_true", help="also the e5 / USE / lexical weight grid")
    parser.add_argument("--curve", action="append", default=[], help="a variant's recall / abstain curve")
    args = parser.parse_args()
    sets = args.sets.split(",")
    if unknown := set(sets) - {"shop", *FROZEN_SETS}:
        parser.error(f"unknown sets {sorted(unknown)}")
    if args.cache and args.cache.exists():
        cases: list[Case] = pickle.loads(args.cache.read_bytes())
    else:
        cases = asyncio.run(embed(sets))
        if args.cache:
            args.cache.write_bytes(pickle.dumps(cases))
    variants = dict(VARIANTS)
    if args.grid:
        for use, lexical in itertools.product((0.2, 0.3, 0.4, 0.5), (0.2, 0.3, 0.45)):
            variants[f"e5 {1 - use:.1f} + USE {use:.1f}, lexical {lexical}"] = {
                "e5": 1 - use,
                "use": use,
                "lexical": lexical,
            }
    for label, variant in variants.items():
        first, top3, per_case = hits(cases, variant)
        detail = "  ".join(f"{name} {figures}" for name, figures in per_case.items())
        print(f"{label:40s} {first:.3f} / {top3:.3f}   {detail}")
    for label in args.curve:
        print(f"\n{label}: threshold, recall@3, off-topic abstain, uncovered abstain")
        for t, recall, abstain, uncovered in curve(cases, variants[label]):
            print(f"  {t:.3f} {recall:.3f} {abstain:.3f} {uncovered:.3f}")


if __name__ == "__main__":
    main()
