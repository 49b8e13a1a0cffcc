"""Matching on a real PostgreSQL: the SQL pre-filter agrees with the Python rules, pairs are scored once per
version, the LLM's verdict is validated, and another embedder is detected and re-embedded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import sql
from pydantic import SecretStr

from tests.integration.push_harness import customer_wrote
from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.agent.kb.embedders import HashingEmbedder
from wxkf.agent.llm import LLMClient
from wxkf.db.engine import Database
from wxkf.kf.runtime import Pipeline
from wxkf.push import store
from wxkf.push.conditions import Conditions, holds, parse_condition, sql_gates
from wxkf.push.models import IntentIn, ProfileIn, ProfilePatch
from wxkf.push.service import PushService

KFID, USER = "wkMATCH", "wmMATCH"
PEOPLE = [
    ProfileIn(
        name="张三",
        city="北京",
        age=35,
        tags=["AI", "连续创业"],
        description="AI 大模型创业者",
        attributes={"team_size": 30},
    ),
    ProfileIn(name="李四", city="上海", age=28, tags=["AI"], position="工程师", description="做机器人"),
    ProfileIn(
        name="王五", city="北京", age=45, tags=["投资"], company="红杉", attributes={"team_size": "很多"}
    ),
    ProfileIn(name="赵六", industry="教育", description="said nothing about ai"),
]


@pytest.fixture
async def push(settings_factory: Any, database: Database) -> AsyncIterator[PushService]:
    async with Pipeline(settings_factory(), database) as pipeline:
        service = PushService(settings_factory(), pipeline)
        yield service
        await service.aclose()


async def _intent(push: PushService, **fields: Any) -> int:
    values: dict[str, Any] = {"name": "寻找AI合作伙伴", "threshold": 0.3, **fields}
    async with push.pool.connection() as conn:
        await customer_wrote(conn, KFID, USER)
    return (
        await push.create_intent(IntentIn(open_kfid=KFID, external_userid=USER, **values), match=False)
    ).id


@pytest.mark.parametrize(
    "condition",
    [
        "city=北京",
        "city=北京|上海",
        "age>30",
        "age=25..40",
        "tags=ai",
        "tags~创业",
        "text~机器人",
        "team_size>10",
        "position~工程师",
    ],
)
async def test_the_sql_pre_filter_keeps_every_profile_the_rules_accept(
    push: PushService, condition: str
) -> None:
    async with push.pool.connection() as conn:
        for person in PEOPLE:
            await store.insert_profile(conn, person)
        parsed = parse_condition(condition)
        required, params = sql_gates(Conditions(required=[parsed]))
        excluded, xparams = sql_gates(Conditions(excluded=[parsed]))

        async def names(where: sql.Composable, values: dict[str, Any]) -> set[str]:
            cur = await conn.execute(
                sql.SQL("SELECT p.name FROM push_profiles p WHERE {}").format(where), values
            )
            return {r[0] for r in await cur.fetchall()}

        python = {p.name for p in PEOPLE if holds(parsed, store.as_condition_profile(p))}
        assert await names(required, params) >= python  # never loses a match
        if parsed.op != "contains":  # exact ops: the same set, and the negation (excluded) is exact too
            assert await names(required, params) == python
            assert await names(excluded, xparams) == {p.name for p in PEOPLE} - python


async def test_a_pair_is_scored_once_per_version_and_a_changed_profile_again(push: PushService) -> None:
    intent_id = await _intent(
        push, conditions={"required": [{"field": "city", "op": "eq", "value": "北京"}], "keywords": ["AI"]}
    )
    profile = await push.create_profile(PEOPLE[0])
    first = await push.matcher.match_intent(intent_id)
    again = await push.matcher.match_intent(intent_id)
    assert (first.recorded, again.recorded, again.scored) == (1, 0, 0)  # the stored pair is not even read
    assert (await push.matcher.match_profiles([profile.id])).recorded == 0
    await push.update_profile(profile.id, ProfilePatch(position="CEO"))
    changed = await push.matcher.match_profiles([profile.id])
    assert changed.recorded == 1
    statuses = sorted((m.status, m.reason) for m in await push.list_matches(intent_id=intent_id))
    assert statuses == [("pending", None), ("retired", "profile_changed")]


async def test_an_unparseable_llm_verdict_is_no_match_and_a_valid_one_is_blended(
    settings_factory: Any, database: Database
) -> None:
    with FakeOpenAI() as fake:
        llm = LLMClient(base_url=fake.base_url, api_key=SecretStr("sk-test"), model="m")
        async with Pipeline(settings_factory(), database) as pipeline:
            push = PushService(settings_factory(), pipeline, llm=llm)
            intent_id = await _intent(push, conditions={"keywords": ["AI"]}, threshold=0.2)
            for person in PEOPLE[:2]:
                await push.create_profile(person)
            fake.reply("这位非常合适！")  # prose: no verdict
            fake.reply('{"match": true, "score": 0.9, "reason": "上海的AI工程师"}')
            run = await push.matcher.match_intent(intent_id)
            await push.aclose()
        matches = {m.profile_name: m for m in await _all_matches(database, settings_factory, intent_id)}
    assert (run.recorded, run.rejected) == (1, 1)
    rejected = [m for m in matches.values() if m.status == "rejected"]
    accepted = [m for m in matches.values() if m.status == "pending"]
    assert [m.reason for m in rejected] == ["llm_unparseable"]
    assert accepted[0].parts["llm"] == 0.9
    assert accepted[0].explanation.startswith("关键词「AI」")  # the rules' reasons, then the model's
    assert accepted[0].explanation.endswith("；模型判断：上海的AI工程师")
    assert len(fake.chat_requests()) == 2  # one question per pair, never repeated


async def _all_matches(database: Database, settings_factory: Any, intent_id: int) -> list[Any]:
    async with Pipeline(settings_factory(), database) as pipeline:
        push = PushService(settings_factory(), pipeline)
        return await push.list_matches(intent_id=intent_id)


async def test_another_embedder_is_detected_and_every_vector_is_made_again(
    settings_factory: Any, database: Database
) -> None:
    async with Pipeline(settings_factory(), database) as pipeline:
        first = PushService(settings_factory(), pipeline, embedder=lambda: HashingEmbedder(dim=256))
        intent_id = await _intent(first, conditions={"keywords": ["AI"]}, threshold=0.1)
        await first.create_profile(PEOPLE[0])
        assert (await first.matcher.match_intent(intent_id)).recorded == 1
    async with Pipeline(settings_factory(), database) as pipeline:  # a process with another model
        other = PushService(settings_factory(), pipeline, embedder=lambda: HashingEmbedder(dim=128))
        await other.update_profile(1, ProfilePatch(position="CEO"))
        assert (await other.matcher.match_intent(intent_id)).recorded == 1
        rows = await _query(pipeline, "SELECT embedder, vector_dims(embedding) FROM push_profiles")
        intents = await _query(pipeline, "SELECT embedder FROM push_intents")
        state = await _query(pipeline, "SELECT embedder FROM push_state")
        indexes = await _query(
            pipeline,
            "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'ix_push_profiles_hnsw_%' ORDER BY 1",
        )
    assert rows == [("hashing-3:d128:g0", 128)]
    assert intents == state == [("hashing-3:d128:g0",)]
    assert [r[0] for r in indexes] == ["ix_push_profiles_hnsw_128", "ix_push_profiles_hnsw_256"]


async def _query(pipeline: Pipeline, sql_text: str) -> list[tuple[Any, ...]]:
    async with pipeline.pool.connection() as conn:
        return list(await (await conn.execute(sql_text)).fetchall())
