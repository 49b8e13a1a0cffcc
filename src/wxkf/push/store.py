"""The push tables in SQL: one named statement per operation, psycopg parameters, the caller's connection.

Profiles carry derived columns written with every change (`search_text`, `terms`) and lose their
vector when their text changes (`embedder` NULL: the matching job embeds them again).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from wxkf.push.conditions import Profile as ConditionProfile
from wxkf.push.conditions import index_terms, tag_term
from wxkf.push.errors import NotFound
from wxkf.push.models import HistoryEntry, Intent, IntentIn, Match, Owner, Preferences, Profile, ProfileIn

PROFILE_FIELDS = ("gender", "age", "city", "company", "position", "industry", "education")
_PROFILE_COLUMNS = (
    "id, external_ref, name, gender, age, city, company, position, industry, education, attributes, "
    "description, tags, status, version, created_by, created_at, updated_at"
)
_INTENT_COLUMNS = (
    "id, open_kfid, external_userid, name, description, conditions, threshold, priority, "
    "max_pushes_per_day, template, status, expires_at, version, created_by, created_at, updated_at"
)


def as_condition_profile(profile: ProfileIn | dict[str, Any]) -> ConditionProfile:
    data = profile.model_dump() if isinstance(profile, ProfileIn) else profile
    return ConditionProfile(
        name=data["name"],
        fields={k: data.get(k) for k in (*PROFILE_FIELDS, "description")},
        tags=data.get("tags") or [],
        attributes=data.get("attributes") or {},
    )


def derived(profile: ProfileIn) -> tuple[str, list[str]]:
    """(search_text, terms) of a profile, written with it."""
    text = as_condition_profile(profile).all_text()
    terms = index_terms(text) | {tag_term(t) for t in profile.tags}
    return text.lower(), sorted(terms)


def embedding_text(profile: ProfileIn | dict[str, Any]) -> str:
    """What a profile's vector is made from."""
    return as_condition_profile(profile).all_text()


# --- profiles -------------------------------------------------------------------------------------

_PROFILE_VALUES = """
INSERT INTO push_profiles (external_ref, name, gender, age, city, company, position, industry, education,
                           attributes, description, tags, search_text, terms, status, created_by)
VALUES (%(external_ref)s, %(name)s, %(gender)s, %(age)s, %(city)s, %(company)s, %(position)s, %(industry)s,
        %(education)s, %(attributes)s, %(description)s, %(tags)s, %(search_text)s, %(terms)s, %(status)s,
        %(created_by)s)
"""
_INSERT_PROFILE = _PROFILE_VALUES + f"RETURNING {_PROFILE_COLUMNS}"
_INSERT_PROFILE_ID = _PROFILE_VALUES + "RETURNING id"
# An import by external_ref: a new row, or a new version when anything changed (nothing otherwise).
_UPSERT_PROFILE = """
INSERT INTO push_profiles (external_ref, name, gender, age, city, company, position, industry, education,
                           attributes, description, tags, search_text, terms, status, created_by)
VALUES (%(external_ref)s, %(name)s, %(gender)s, %(age)s, %(city)s, %(company)s, %(position)s, %(industry)s,
        %(education)s, %(attributes)s, %(description)s, %(tags)s, %(search_text)s, %(terms)s, 'active',
        %(created_by)s)
ON CONFLICT (external_ref) DO UPDATE SET
    name = EXCLUDED.name, gender = EXCLUDED.gender, age = EXCLUDED.age, city = EXCLUDED.city,
    company = EXCLUDED.company, position = EXCLUDED.position, industry = EXCLUDED.industry,
    education = EXCLUDED.education, attributes = EXCLUDED.attributes, description = EXCLUDED.description,
    tags = EXCLUDED.tags, search_text = EXCLUDED.search_text, terms = EXCLUDED.terms, status = 'active',
    version = push_profiles.version + 1, embedding = NULL, embedder = NULL, updated_at = now()
WHERE (push_profiles.name, push_profiles.gender, push_profiles.age, push_profiles.city, push_profiles.company,
       push_profiles.position, push_profiles.industry, push_profiles.education, push_profiles.attributes,
       push_profiles.description, push_profiles.tags, push_profiles.status)
      IS DISTINCT FROM
      (EXCLUDED.name, EXCLUDED.gender, EXCLUDED.age, EXCLUDED.city, EXCLUDED.company, EXCLUDED.position,
       EXCLUDED.industry, EXCLUDED.education, EXCLUDED.attributes, EXCLUDED.description, EXCLUDED.tags, 'active')
RETURNING id
"""
_UPDATE_PROFILE = f"""
UPDATE push_profiles SET
    name = %(name)s, gender = %(gender)s, age = %(age)s, city = %(city)s, company = %(company)s,
    position = %(position)s, industry = %(industry)s, education = %(education)s, attributes = %(attributes)s,
    description = %(description)s, tags = %(tags)s, search_text = %(search_text)s, terms = %(terms)s,
    version = version + 1, embedding = NULL, embedder = NULL, updated_at = now()
WHERE id = %(id)s AND status <> 'deleted'
RETURNING {_PROFILE_COLUMNS}
"""
_GET_PROFILE = f"SELECT {_PROFILE_COLUMNS} FROM push_profiles WHERE id = %s"
_LIST_PROFILES = f"""
SELECT {_PROFILE_COLUMNS} FROM push_profiles
WHERE status = coalesce(%(status)s, status) AND status <> 'deleted'
  AND (%(q)s::text IS NULL OR strpos(search_text, lower(%(q)s)) > 0)
ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s
"""
_SET_PROFILE_STATUS = f"""
UPDATE push_profiles SET status = %s, version = version + 1, updated_at = now()
WHERE id = %s AND status <> 'deleted' RETURNING {_PROFILE_COLUMNS}
"""
# A profile that is gone, or changed, takes its undelivered matches with it (a new version is scored anew).
_RETIRE_PROFILE_MATCHES = """
UPDATE push_matches SET status = 'retired', reason = %s, updated_at = now()
WHERE profile_id = %s AND status IN ('pending', 'scheduled', 'dropped')
RETURNING id
"""


def _profile_params(profile: ProfileIn, *, status: str = "active", created_by: str = "api") -> dict[str, Any]:
    search_text, terms = derived(profile)
    data = profile.model_dump()
    return {
        **data,
        "attributes": Jsonb(data["attributes"]),
        "search_text": search_text,
        "terms": terms,
        "status": status,
        "created_by": created_by,
    }


def _profile(row: dict[str, Any]) -> Profile:
    return Profile.model_validate(row)


async def insert_profile(
    conn: AsyncConnection[Any], profile: ProfileIn, *, status: str = "active", created_by: str = "api"
) -> Profile:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_INSERT_PROFILE, _profile_params(profile, status=status, created_by=created_by))
        row = await cur.fetchone()
    assert row is not None
    return _profile(row)


async def upsert_profiles(
    conn: AsyncConnection[Any], profiles: Sequence[ProfileIn], *, created_by: str
) -> list[int]:
    """Insert new profiles, new versions of changed ones (by external_ref); returns the ids written."""
    ids: list[int] = []
    async with conn.cursor() as cur:
        for profile in profiles:
            statement = _UPSERT_PROFILE if profile.external_ref else _INSERT_PROFILE_ID
            await cur.execute(statement, _profile_params(profile, created_by=created_by))
            row = await cur.fetchone()
            if row is not None:
                ids.append(int(row[0]))
    return ids


async def get_profile(conn: AsyncConnection[Any], profile_id: int) -> Profile:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET_PROFILE, (profile_id,))
        row = await cur.fetchone()
    if row is None or row["status"] == "deleted":
        raise NotFound(f"没有编号为 {profile_id} 的资料 / no profile {profile_id}")
    return _profile(row)


async def list_profiles(
    conn: AsyncConnection[Any],
    *,
    query: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Profile]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _LIST_PROFILES, {"q": query or None, "status": status, "limit": limit, "offset": offset}
        )
        return [_profile(r) for r in await cur.fetchall()]


async def update_profile(conn: AsyncConnection[Any], profile_id: int, profile: ProfileIn) -> Profile:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_UPDATE_PROFILE, {**_profile_params(profile), "id": profile_id})
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"没有编号为 {profile_id} 的资料 / no profile {profile_id}")
    await conn.execute(_RETIRE_PROFILE_MATCHES, ("profile_changed", profile_id))
    return _profile(row)


async def set_profile_status(conn: AsyncConnection[Any], profile_id: int, status: str) -> Profile:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SET_PROFILE_STATUS, (status, profile_id))
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"没有编号为 {profile_id} 的资料 / no profile {profile_id}")
    if status == "deleted":
        await conn.execute(_RETIRE_PROFILE_MATCHES, ("profile_deleted", profile_id))
    return _profile(row)


# --- intents --------------------------------------------------------------------------------------

_INSERT_INTENT = f"""
INSERT INTO push_intents (open_kfid, external_userid, name, description, conditions, threshold, priority,
                          max_pushes_per_day, template, status, expires_at, created_by)
VALUES (%(open_kfid)s, %(external_userid)s, %(name)s, %(description)s, %(conditions)s, %(threshold)s,
        %(priority)s, %(max_pushes_per_day)s, %(template)s, %(status)s, %(expires_at)s, %(created_by)s)
RETURNING {_INTENT_COLUMNS}
"""
_UPDATE_INTENT = f"""
UPDATE push_intents SET
    name = %(name)s, description = %(description)s, conditions = %(conditions)s, threshold = %(threshold)s,
    priority = %(priority)s, max_pushes_per_day = %(max_pushes_per_day)s, template = %(template)s,
    expires_at = %(expires_at)s, status = %(status)s, version = version + 1,
    embedding = CASE WHEN %(reembed)s THEN NULL ELSE embedding END,
    embedder = CASE WHEN %(reembed)s THEN NULL ELSE embedder END, updated_at = now()
WHERE id = %(id)s
RETURNING {_INTENT_COLUMNS}
"""
_GET_INTENT = f"SELECT {_INTENT_COLUMNS} FROM push_intents WHERE id = %s"
_LIST_INTENTS = f"""
SELECT {_INTENT_COLUMNS} FROM push_intents
WHERE (%(k)s::text IS NULL OR open_kfid = %(k)s) AND (%(u)s::text IS NULL OR external_userid = %(u)s)
  AND (%(status)s::text IS NULL OR status = %(status)s) AND (%(all)s OR status <> 'cancelled')
ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s
"""
_SET_INTENT_STATUS = f"""
UPDATE push_intents SET status = %s, version = version + 1, updated_at = now() WHERE id = %s
RETURNING {_INTENT_COLUMNS}
"""
_RETIRE_INTENT_MATCHES = """
UPDATE push_matches SET status = 'retired', reason = %s, updated_at = now()
WHERE intent_id = %s AND status IN ('pending', 'scheduled', 'dropped')
"""


def _intent(row: dict[str, Any]) -> Intent:
    return Intent.model_validate(row)


def _intent_params(intent: IntentIn, threshold: float) -> dict[str, Any]:
    data = intent.model_dump(mode="python")
    return {**data, "conditions": Jsonb(intent.conditions.model_dump(mode="json")), "threshold": threshold}


async def insert_intent(
    conn: AsyncConnection[Any], intent: IntentIn, *, threshold: float, status: str, created_by: str
) -> Intent:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _INSERT_INTENT, {**_intent_params(intent, threshold), "status": status, "created_by": created_by}
        )
        row = await cur.fetchone()
    assert row is not None
    return _intent(row)


async def get_intent(conn: AsyncConnection[Any], intent_id: int, *, for_update: bool = False) -> Intent:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET_INTENT + (" FOR UPDATE" if for_update else ""), (intent_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"没有编号为 {intent_id} 的意图 / no intent {intent_id}")
    return _intent(row)


async def list_intents(
    conn: AsyncConnection[Any],
    owner: Owner | None = None,
    *,
    status: str | None = None,
    include_cancelled: bool = False,
    external_userid: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Intent]:
    """Intents, newest first; `external_userid` alone filters by the customer on any kf account."""
    params = {
        "k": owner.open_kfid if owner else None,
        "u": owner.external_userid if owner else external_userid,
        "status": status,
        "all": include_cancelled or status == "cancelled",
        "limit": limit,
        "offset": offset,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST_INTENTS, params)
        return [_intent(r) for r in await cur.fetchall()]


async def update_intent(
    conn: AsyncConnection[Any],
    intent_id: int,
    intent: IntentIn,
    *,
    threshold: float,
    status: str,
    reembed: bool,
) -> Intent:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _UPDATE_INTENT,
            {**_intent_params(intent, threshold), "id": intent_id, "status": status, "reembed": reembed},
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"没有编号为 {intent_id} 的意图 / no intent {intent_id}")
    await conn.execute(_RETIRE_INTENT_MATCHES, ("intent_changed", intent_id))
    return _intent(row)


async def set_intent_status(conn: AsyncConnection[Any], intent_id: int, status: str) -> Intent:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SET_INTENT_STATUS, (status, intent_id))
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"没有编号为 {intent_id} 的意图 / no intent {intent_id}")
    if status != "active":
        await conn.execute(_RETIRE_INTENT_MATCHES, (f"intent_{status}", intent_id))
    return _intent(row)


# --- customers ------------------------------------------------------------------------------------

# A customer exists for push once the pipeline has a conversation with them (kf_conversations: the
# row their first message writes); an account, once a customer wrote to it or it was synced.
_CUSTOMER_SEEN = """
SELECT EXISTS (SELECT 1 FROM kf_conversations WHERE open_kfid = %(k)s AND external_userid = %(u)s),
       EXISTS (SELECT 1 FROM kf_conversations WHERE open_kfid = %(k)s)
       OR EXISTS (SELECT 1 FROM kf_sync_cursors WHERE open_kfid = %(k)s)
"""


async def customer_seen(conn: AsyncConnection[Any], owner: Owner) -> tuple[bool, bool]:
    """(the customer has written to the account, the account has been seen at all)."""
    cur = await conn.execute(_CUSTOMER_SEEN, {"k": owner.open_kfid, "u": owner.external_userid})
    row = await cur.fetchone()
    return (bool(row[0]), bool(row[1])) if row else (False, False)


# --- preferences ----------------------------------------------------------------------------------

_GET_PREFERENCES = """
SELECT enabled, quiet_start, quiet_end, timezone, daily_limit, min_score, digest_hour, mode
FROM push_preferences WHERE open_kfid = %s AND external_userid = %s
"""
_SET_PREFERENCES = """
INSERT INTO push_preferences (open_kfid, external_userid, enabled, quiet_start, quiet_end, timezone,
                              daily_limit, min_score, digest_hour, mode)
VALUES (%(k)s, %(u)s, %(enabled)s, %(qs)s, %(qe)s, %(timezone)s, %(daily_limit)s, %(min_score)s,
        %(digest_hour)s, %(mode)s)
ON CONFLICT (open_kfid, external_userid) DO UPDATE SET
    enabled = EXCLUDED.enabled, quiet_start = EXCLUDED.quiet_start, quiet_end = EXCLUDED.quiet_end,
    timezone = EXCLUDED.timezone, daily_limit = EXCLUDED.daily_limit, min_score = EXCLUDED.min_score,
    digest_hour = EXCLUDED.digest_hour, mode = EXCLUDED.mode, updated_at = now()
"""


def preferences_from_row(row: tuple[Any, ...] | None, defaults: Preferences) -> Preferences:
    if row is None:
        return defaults
    enabled, qs, qe, zone, daily, min_score, digest, mode = row
    quiet = f"{qs:%H:%M}-{qe:%H:%M}" if qs is not None and qe is not None else ""
    return Preferences(
        enabled=enabled,
        quiet_hours=quiet,
        timezone=zone,
        daily_limit=daily,
        min_score=min_score,
        digest_hour=digest,
        mode=mode,
    )


async def get_preferences(conn: AsyncConnection[Any], owner: Owner, defaults: Preferences) -> Preferences:
    cur = await conn.execute(_GET_PREFERENCES, (owner.open_kfid, owner.external_userid))
    return preferences_from_row(await cur.fetchone(), defaults)


async def set_preferences(conn: AsyncConnection[Any], owner: Owner, prefs: Preferences) -> None:
    quiet_start, quiet_end = prefs.quiet_columns()
    await conn.execute(
        _SET_PREFERENCES,
        {
            "k": owner.open_kfid,
            "u": owner.external_userid,
            **prefs.model_dump(exclude={"quiet_hours"}),
            "qs": quiet_start,
            "qe": quiet_end,
        },
    )


# --- templates ------------------------------------------------------------------------------------

_GET_TEMPLATE = "SELECT kind, body FROM push_templates WHERE name = %s"
_LIST_TEMPLATES = "SELECT name, kind, body, updated_at FROM push_templates ORDER BY name"
_SET_TEMPLATE = """
INSERT INTO push_templates (name, kind, body) VALUES (%s, %s, %s)
ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, body = EXCLUDED.body, updated_at = now()
"""
_DELETE_TEMPLATE = "DELETE FROM push_templates WHERE name = %s RETURNING name"


async def get_template_row(conn: AsyncConnection[Any], name: str) -> tuple[str, dict[str, Any]] | None:
    row = await (await conn.execute(_GET_TEMPLATE, (name,))).fetchone()
    return None if row is None else (str(row[0]), dict(row[1]))


async def list_template_rows(conn: AsyncConnection[Any]) -> list[tuple[str, str, dict[str, Any], datetime]]:
    cur = await conn.execute(_LIST_TEMPLATES)
    return [(r[0], r[1], dict(r[2]), r[3]) for r in await cur.fetchall()]


async def set_template_row(conn: AsyncConnection[Any], name: str, kind: str, body: dict[str, Any]) -> None:
    await conn.execute(_SET_TEMPLATE, (name, kind, Jsonb(body)))


async def delete_template_row(conn: AsyncConnection[Any], name: str) -> bool:
    return await (await conn.execute(_DELETE_TEMPLATE, (name,))).fetchone() is not None


# --- matches and history --------------------------------------------------------------------------

_MATCH_COLUMNS = """
m.id, m.open_kfid, m.external_userid, m.intent_id, i.name AS intent_name, m.profile_id, p.name AS profile_name,
m.score, m.parts, m.matched, m.explanation, m.status, m.reason, m.due_at, m.number, m.feedback, m.created_at
"""
_LIST_MATCHES = f"""
SELECT {_MATCH_COLUMNS}
FROM push_matches m JOIN push_intents i ON i.id = m.intent_id JOIN push_profiles p ON p.id = m.profile_id
WHERE (%(intent)s::bigint IS NULL OR m.intent_id = %(intent)s)
  AND (%(profile)s::bigint IS NULL OR m.profile_id = %(profile)s)
  AND (%(k)s::text IS NULL OR m.open_kfid = %(k)s) AND (%(u)s::text IS NULL OR m.external_userid = %(u)s)
  AND (%(status)s::text IS NULL OR m.status = %(status)s)
ORDER BY m.id DESC LIMIT %(limit)s OFFSET %(offset)s
"""
_GET_MATCH = f"""
SELECT {_MATCH_COLUMNS}
FROM push_matches m JOIN push_intents i ON i.id = m.intent_id JOIN push_profiles p ON p.id = m.profile_id
WHERE m.id = %s
"""
# What 查看N shows: the match the customer got as number N, with the whole profile.
_MATCH_BY_NUMBER = """
SELECT m.id, m.number, m.score, m.explanation, m.feedback, i.name AS intent_name, p.name, p.gender, p.age,
       p.city, p.company, p.position, p.industry, p.education, p.description, p.tags, p.attributes
FROM push_matches m JOIN push_intents i ON i.id = m.intent_id JOIN push_profiles p ON p.id = m.profile_id
WHERE m.open_kfid = %s AND m.external_userid = %s AND m.number = coalesce(%s, (
    SELECT max(number) FROM push_matches WHERE open_kfid = %s AND external_userid = %s))
"""
_PUSHED_NUMBERS = """
SELECT min(number), max(number) FROM push_matches WHERE open_kfid = %s AND external_userid = %s AND number IS NOT NULL
"""
_SET_FEEDBACK = """
UPDATE push_matches SET feedback = %s, feedback_at = %s, updated_at = now()
WHERE id = %s AND (feedback IS NULL OR %s = 'not_interested')
"""
_LIST_HISTORY = """
SELECT h.id, h.match_id, h.intent_id, h.open_kfid, h.external_userid, h.status, h.reason, h.due_at, h.msgid,
       o.status AS delivery, h.at
FROM push_history h LEFT JOIN kf_outbox o ON o.open_kfid = h.open_kfid AND o.msgid = h.msgid
WHERE (%(k)s::text IS NULL OR h.open_kfid = %(k)s) AND (%(u)s::text IS NULL OR h.external_userid = %(u)s)
  AND (%(intent)s::bigint IS NULL OR h.intent_id = %(intent)s)
  AND (%(status)s::text IS NULL OR h.status = %(status)s)
ORDER BY h.id DESC LIMIT %(limit)s OFFSET %(offset)s
"""


async def list_matches(
    conn: AsyncConnection[Any],
    *,
    owner: Owner | None = None,
    intent_id: int | None = None,
    profile_id: int | None = None,
    status: str | None = None,
    external_userid: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Match]:
    """Matches, newest first; `external_userid` alone filters by the customer on any kf account."""
    params = {
        "intent": intent_id,
        "profile": profile_id,
        "k": owner.open_kfid if owner else None,
        "u": owner.external_userid if owner else external_userid,
        "status": status,
        "limit": limit,
        "offset": offset,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST_MATCHES, params)
        return [Match.model_validate(r) for r in await cur.fetchall()]


async def get_match(conn: AsyncConnection[Any], match_id: int) -> Match:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET_MATCH, (match_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"没有编号为 {match_id} 的匹配 / no match {match_id}")
    return Match.model_validate(row)


async def match_by_number(
    conn: AsyncConnection[Any], owner: Owner, number: int | None
) -> dict[str, Any] | None:
    """The match a customer received as `number` (None: the latest they received)."""
    k, u = owner.open_kfid, owner.external_userid
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_MATCH_BY_NUMBER, (k, u, number, k, u))
        return await cur.fetchone()


async def pushed_numbers(conn: AsyncConnection[Any], owner: Owner) -> tuple[int, int] | None:
    row = await (await conn.execute(_PUSHED_NUMBERS, (owner.open_kfid, owner.external_userid))).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


async def set_feedback(conn: AsyncConnection[Any], match_id: int, feedback: str, at: datetime) -> None:
    await conn.execute(_SET_FEEDBACK, (feedback, at, match_id, feedback))


async def list_history(
    conn: AsyncConnection[Any],
    *,
    owner: Owner | None = None,
    intent_id: int | None = None,
    status: str | None = None,
    external_userid: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[HistoryEntry]:
    """Push decisions, newest first; `external_userid` alone filters by the customer on any kf account."""
    from wxkf.push.eligibility import explain

    params = {
        "k": owner.open_kfid if owner else None,
        "u": owner.external_userid if owner else external_userid,
        "intent": intent_id,
        "status": status,
        "limit": limit,
        "offset": offset,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST_HISTORY, params)
        rows = await cur.fetchall()
    return [HistoryEntry.model_validate({**r, "explanation": explain(r["reason"]) or None}) for r in rows]
