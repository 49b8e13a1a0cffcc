"""Push matching at scale: one intent against 100,000 profiles, and a full re-match of 1,000 intents.

100,000 synthetic profiles (cities, industries, positions, tags and descriptions recombined from short
Chinese lists, so gates, keywords and vectors look like real ones) are written with COPY and their
HNSW index is built (PostgreSQL's shared_buffers sized for them, `--shared-buffers`). Vectors: `--vectors model` embeds every profile with the project's embedder
(`make_embedder`, the offline default unless EMBEDDING_* is set); `--vectors random` writes random
vectors of `--dim` dimensions (the speed of the search does not depend on what the vectors mean).

Measured, alternating with its baseline in the same run:
* one intent scored: `Matcher.candidates` — the SQL pre-filter of its required conditions, the
  nearest profiles by HNSW and the profiles mentioning a keyword, each candidate scored in Python;
* the baseline: the bare pgvector top-k query, `ORDER BY embedding <=> $1 LIMIT k` with the same k
  (PUSH_SEMANTIC_CANDIDATES) and the vector already computed.
Then 1,000 intents (200 customers, varied gates and keywords) are matched in full, four at a time
like a worker: `Matcher.match_intent` (embed the intent, candidates, score, record the top matches).

    .venv/bin/python benchmarks/bench_push.py [--profiles 100000] [--intents 1000] [--vectors model|random] [--dim 384]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from wxkf.agent.kb.embedders import Embedder, make_embedder
from wxkf.config import Settings
from wxkf.db.engine import Database, ensure_pgvector
from wxkf.db.migrate import upgrade
from wxkf.db.vectors import vector_literal
from wxkf.kf.runtime import Pipeline
from wxkf.push.conditions import Conditions
from wxkf.push.matching import _INTENT_FOR_MATCHING
from wxkf.push.models import ProfileIn
from wxkf.push.service import PushService
from wxkf.push.store import derived, embedding_text
from wxkf.push.vectors import ensure_index, intent_text

CITIES = (
    ["北京"] * 4
    + ["上海"] * 4
    + ["深圳"] * 3
    + ["杭州"] * 2
    + ["广州", "成都", "南京", "武汉", "西安", "苏州"]
)
INDUSTRIES = ["人工智能", "教育", "医疗", "金融", "电商", "制造", "游戏", "新能源", "物流", "文旅"]
POSITIONS = ["CTO", "CEO", "产品经理", "工程师", "投资经理", "销售总监", "设计师", "运营", "创始人", "研究员"]
TAGS = [
    "AI",
    "创业",
    "连续创业",
    "大模型",
    "投资",
    "海归",
    "开源",
    "出海",
    "融资",
    "技术合伙人",
    "增长",
    "SaaS",
]
PHRASES = [
    "在{city}做{industry}方向的创业",
    "十年{industry}行业经验",
    "正在寻找技术合伙人",
    "关注大模型应用落地",
    "负责过千万级用户产品",
    "擅长从零到一搭建团队",
    "希望认识投资人",
    "做过两次创业，一次被收购",
    "熟悉出海业务",
    "带领过百人研发团队",
]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class RandomEmbedder:
    """Random unit vectors of `dim` dimensions: the search's speed without the embedding's cost."""

    def __init__(self, dim: int, seed: int = 7) -> None:
        self._dim = dim
        self._rng = random.Random(seed)

    @property
    def name(self) -> str:
        return "random"

    @property
    def version(self) -> str:
        return f"bench-random:d{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def similarity_range(self) -> tuple[float, float]:
        return (0.0, 1.0)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for _ in texts:
            v = [self._rng.gauss(0, 1) for _ in range(self._dim)]
            norm = math.sqrt(sum(x * x for x in v))
            out.append([x / norm for x in v])
        return out

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed([text]))[0]

    async def aclose(self) -> None:
        return None


def synthetic_profiles(n: int, seed: int = 11) -> list[ProfileIn]:
    rng = random.Random(seed)
    people = []
    for i in range(n):
        city, industry = rng.choice(CITIES), rng.choice(INDUSTRIES)
        description = "，".join(p.format(city=city, industry=industry) for p in rng.sample(PHRASES, 3)) + "。"
        people.append(
            ProfileIn(
                name=f"联系人{i}",
                city=city,
                industry=industry,
                position=rng.choice(POSITIONS),
                age=rng.randint(22, 60),
                tags=rng.sample(TAGS, rng.randint(1, 4)),
                description=description,
                attributes={"team_size": rng.randint(1, 500)},
            )
        )
    return people


def synthetic_intents(n: int, seed: int = 13) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    intents = []
    for i in range(n):
        city = rng.choice(CITIES)
        required: list[dict[str, Any]] = (
            [{"field": "city", "op": "eq", "value": city}] if rng.random() < 0.7 else []
        )
        if rng.random() < 0.3:
            required.append({"field": "age", "op": "between", "value": [25, 45]})
        preferred: list[dict[str, Any]] = [{"field": "tags", "op": "contains", "value": rng.choice(TAGS)}]
        if rng.random() < 0.5:
            preferred.append({"field": "industry", "op": "eq", "value": rng.choice(INDUSTRIES)})
        keywords = rng.sample(["AI", "创业", "大模型", "投资人", "合伙人", "出海", "SaaS"], rng.randint(1, 3))
        conditions = Conditions.model_validate(
            {"required": required, "preferred": preferred, "keywords": keywords}
        )
        intents.append(
            {
                "owner": ("wkBENCH", f"wm{i % 200:04d}"),
                "name": f"寻找{rng.choice(POSITIONS)}",
                "description": f"想在{city}找{rng.choice(INDUSTRIES)}方向的{rng.choice(POSITIONS)}",
                "conditions": conditions.model_dump(mode="json"),
            }
        )
    return intents


async def load(
    conninfo: str, embedder: Embedder, n_profiles: int, intents: list[dict[str, Any]]
) -> dict[str, float]:
    profiles = synthetic_profiles(n_profiles)
    started = time.perf_counter()
    vectors: list[list[float]] = []
    for start in range(0, n_profiles, 512):
        vectors += await embedder.embed([embedding_text(p) for p in profiles[start : start + 512]])
    embedded = time.perf_counter() - started
    dim = len(vectors[0])
    started = time.perf_counter()
    intent_vectors = await embedder.embed(
        [intent_text(i["name"], i["description"], i["conditions"]) for i in intents]
    )
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        async with conn.cursor().copy(
            "COPY push_profiles (name, city, industry, position, age, tags, description, attributes, search_text, "
            "terms, embedding, embedder) FROM STDIN"
        ) as copy:
            for profile, vector in zip(profiles, vectors, strict=True):
                search_text, terms = derived(profile)
                await copy.write_row(
                    (
                        profile.name,
                        profile.city,
                        profile.industry,
                        profile.position,
                        profile.age,
                        profile.tags,
                        profile.description,
                        Jsonb(profile.attributes),
                        search_text,
                        terms,
                        vector_literal(vector),
                        embedder.version,
                    )
                )
        async with conn.cursor().copy(
            "COPY push_intents (open_kfid, external_userid, name, description, conditions, threshold, embedding, "
            "embedder) FROM STDIN"
        ) as copy:
            for intent, vector in zip(intents, intent_vectors, strict=True):
                await copy.write_row(
                    (
                        *intent["owner"],
                        intent["name"],
                        intent["description"],
                        Jsonb(intent["conditions"]),
                        0.5,
                        vector_literal(vector),
                        embedder.version,
                    )
                )
        await conn.execute("UPDATE push_state SET embedder = %s", (embedder.version,))
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await ensure_index(conn, dim)
        await conn.execute("VACUUM ANALYZE push_profiles")
        indexed = time.perf_counter() - started
    print(
        f"embedded in {embedded:.0f} s, loaded in {loaded:.0f} s, HNSW built in {indexed:.0f} s",
        file=sys.stderr,
    )
    return {
        "profiles": n_profiles,
        "dim": dim,
        "embed_s": round(embedded, 1),
        "load_s": round(loaded, 1),
        "hnsw_build_s": round(indexed, 1),
    }


async def one_intent(push: PushService, conninfo: str, dim: int, rounds: int) -> dict[str, float]:
    """`Matcher.candidates` for the first 50 intents against the bare top-k, alternating, `rounds` times."""
    k = push.settings.push_semantic_candidates
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        cur = conn.cursor(row_factory=dict_row)
        rows: list[dict[str, Any]] = []
        for intent_id in range(1, 51):
            await cur.execute(_INTENT_FOR_MATCHING, (intent_id,))
            row = await cur.fetchone()
            assert row is not None
            rows.append(row)
        bare = (
            f"SELECT id FROM push_profiles WHERE vector_dims(embedding) = {dim} "
            f"ORDER BY embedding::vector({dim}) <=> %s::vector({dim}) LIMIT {k}"
        )
        await conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(max(40, k)),))
        for row in rows:  # warm the caches (and the search plans), both paths
            await push.matcher.candidates(row)
            await conn.execute(bare, (row["embedding"],))
        baseline: list[float] = []
        scored: list[float] = []
        candidates = []
        for _ in range(rounds):
            for row in rows:
                t0 = time.perf_counter()
                await (await conn.execute(bare, (row["embedding"],))).fetchall()
                baseline.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                found = await push.matcher.candidates(row)
                scored.append((time.perf_counter() - t0) * 1000)
                candidates.append(len(found))
    return {
        "runs": len(scored),
        "candidates_scored_median": statistics.median(candidates),
        "baseline_topk_p50_ms": round(statistics.median(baseline), 2),
        "baseline_topk_p95_ms": round(percentile(baseline, 95), 2),
        "intent_scored_p50_ms": round(statistics.median(scored), 2),
        "intent_scored_p95_ms": round(percentile(scored, 95), 2),
        "p95_ratio_to_baseline": round(percentile(scored, 95) / percentile(baseline, 95), 2),
    }


async def full_rematch(push: PushService, n_intents: int, concurrency: int = 4) -> dict[str, float]:
    """Every intent matched in full (`match_intent`), `concurrency` at a time like a worker."""
    ids = list(range(1, n_intents + 1))
    recorded = scored = 0

    async def lane(mine: list[int]) -> None:
        nonlocal recorded, scored
        for intent_id in mine:
            run = await push.matcher.match_intent(intent_id)
            recorded += run.recorded
            scored += run.scored

    started = time.perf_counter()
    await asyncio.gather(*(lane(ids[i::concurrency]) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "intents": n_intents,
        "concurrency": concurrency,
        "seconds": round(elapsed, 1),
        "intents_per_s": round(n_intents / elapsed, 1),
        "pairs_scored_per_s": round(scored / elapsed),
        "matches": recorded,
        "matches_per_s": round(recorded / elapsed, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    from pgserver.postgres_server import get_server

    # shared_buffers sized for the data (table + HNSW index ≈ 400 MB at 100,000 profiles), as a
    # server holding them would be: pgserver's 128 MB default reads most pages from the OS cache.
    data = Path(tempfile.mkdtemp(prefix="wxkf-bench-"))
    server = get_server(data, cleanup_mode="stop")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{args.shared_buffers}'")
    server.cleanup()
    server = get_server(data, cleanup_mode="delete")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE push")
        uri: str = server.get_uri("push")
        ensure_pgvector(uri)
        upgrade(uri)
        settings = Settings(_env_file=None, database_url=uri, wxkf_data_dir=Path(tempfile.mkdtemp()))
        embedder: Embedder = RandomEmbedder(args.dim) if args.vectors == "random" else make_embedder(settings)
        intents = synthetic_intents(args.intents)
        loaded = await load(uri, embedder, args.profiles, intents)
        database = await Database.open(settings, migrate=False)
        async with Pipeline(settings, database) as pipeline:
            push = PushService(settings, pipeline, embedder=lambda: embedder)
            scoring = await one_intent(push, uri, int(loaded["dim"]), args.rounds)
            rematch = await full_rematch(push, args.intents)
        await database.close()
        return {
            "bench": "push",
            "machine": f"{os.cpu_count()} cores {platform.machine()}, load {os.getloadavg()[0]:.1f}",
            "shared_buffers": args.shared_buffers,
            "embedder": embedder.version,
            "load": loaded,
            "one_intent": scoring,
            "rematch": rematch,
        }
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--intents", type=int, default=1000)
    parser.add_argument("--vectors", choices=["model", "random"], default="model")
    parser.add_argument("--dim", type=int, default=384, help="with --vectors random")
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds of the 50 intents, each against the baseline"
    )
    parser.add_argument("--shared-buffers", default="1GB", help="PostgreSQL's shared_buffers for the run")
    print(json.dumps(asyncio.run(run(parser.parse_args())), ensure_ascii=False))


if __name__ == "__main__":
    main()
