"""One customer's push: eligibility and sending in the transaction that holds the conversation's budget.

read the session state (cached, or asked of WeCom) and prepare the templates (a card's thumb
media_id may need an upload) — outside the transaction, so the budget's row is never held over HTTP
BEGIN
  lock kf_conversations' row (`ReplyBudget.lock`): replies and other pushes for this customer wait
  the customer's pending matches, their preferences, what was pushed today (in their time zone)
  decide (`eligibility.decide`)
  send  → number the matches, render one message for all of them, write it to the outbox within
          the budget (keeping PUSH_KEEP_FOR_REPLIES), history `sent`
  wait  → matches `scheduled` with `due_at` (the tick picks them up), history `scheduled`
  drop  → matches `dropped` with the reason (pending again for a later push), history `dropped`
COMMIT, then the conversation job sends the outbox row (the one send path: no 95001, no 95018)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from wxkf.clock import Clock
from wxkf.kf.budget import WINDOW, ReplyBudget
from wxkf.kf.outbox import enqueue_messages
from wxkf.kf.responder import Conversation, OutboxMessage
from wxkf.media.errors import MediaError
from wxkf.push import store
from wxkf.push.eligibility import Action, Decision, Reason, Situation, decide
from wxkf.push.models import Owner, Preferences
from wxkf.push.quiet import local_day_start, local_midnight_after
from wxkf.push.templates import (
    DEFAULT_TEMPLATE,
    Item,
    MiniProgramTemplate,
    Template,
    render_card,
    render_text,
)
from wxkf.wecom.errors import WeComError

log = logging.getLogger("wxkf.push.delivery")

RETRY_AFTER_WECOM_ERROR = timedelta(minutes=5)
TRANSIENT = [r.value for r in Reason if not r.final]

_PENDING = """
SELECT m.id, m.intent_id, m.profile_id, m.score, m.explanation, m.matched, m.status, m.reason, m.due_at,
       i.name AS intent_name, i.status AS intent_status, i.expires_at, i.max_pushes_per_day, i.template,
       p.name AS profile_name, p.city, p.company, p.position
FROM push_matches m
JOIN push_intents i ON i.id = m.intent_id
JOIN push_profiles p ON p.id = m.profile_id
WHERE m.open_kfid = %(k)s AND m.external_userid = %(u)s
  AND (m.status IN ('pending', 'scheduled') OR (m.status = 'dropped' AND m.reason = ANY(%(transient)s)))
ORDER BY i.priority DESC, m.score DESC, m.id
"""
_PENDING_TEMPLATES = """
SELECT DISTINCT coalesce(i.template, 'default') FROM push_matches m JOIN push_intents i ON i.id = m.intent_id
WHERE m.open_kfid = %(k)s AND m.external_userid = %(u)s
  AND (m.status IN ('pending', 'scheduled') OR (m.status = 'dropped' AND m.reason = ANY(%(transient)s)))
"""
_CONVERSATION = """
SELECT paused_until,
       CASE WHEN state_checked_at > now() - make_interval(secs => %s) THEN service_state END,
       window_started_at
FROM kf_conversations WHERE open_kfid = %s AND external_userid = %s
"""
_SENT_TODAY = """
SELECT intent_id, count(*), array_agg(DISTINCT msgid) FROM push_history
WHERE open_kfid = %s AND external_userid = %s AND status = 'sent' AND at >= %s
GROUP BY intent_id
"""
_NEXT_NUMBER = (
    "SELECT coalesce(max(number), 0) FROM push_matches WHERE open_kfid = %s AND external_userid = %s"
)
_MARK_PUSHED = "UPDATE push_matches SET status = 'pushed', reason = NULL, due_at = NULL, number = %s, updated_at = now() WHERE id = %s"
_MARK = "UPDATE push_matches SET status = %s, reason = %s, due_at = %s, updated_at = now() WHERE id = ANY(%s::bigint[])"
_HISTORY = """
INSERT INTO push_history (match_id, intent_id, open_kfid, external_userid, status, reason, due_at, msgid,
                          template, at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


@dataclass(frozen=True)
class Outcome:
    """What one delivery did (for logs, tests and the CLI)."""

    action: Action | None  # None: nothing was pending
    reason: Reason | None = None
    until: datetime | None = None
    msgid: str | None = None
    sent: int = 0  # matches in the message
    waiting: int = 0


Templates = Callable[[AsyncConnection[Any], str], Awaitable[Template]]
ThumbId = Callable[[str], Awaitable[str]]
SessionStateOf = Callable[[Conversation], Awaitable[int | None]]


class Deliveries:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        defer_converse: Callable[[Conversation], Awaitable[object]],
        *,
        defaults: Preferences,
        keep_for_replies: int,
        max_items: int,
        state_cache_seconds: float,
        clock: Clock,
        templates: Templates,
        thumb_media_id: ThumbId,
        session_state: SessionStateOf,
    ) -> None:
        self._pool = pool
        self._defer_converse = defer_converse
        self._defaults = defaults
        self._keep = keep_for_replies
        self._max_items = max_items
        self._state_cache = state_cache_seconds
        self._clock = clock
        self._templates = templates
        self._thumb = thumb_media_id
        self._session_state = session_state
        self._budget = ReplyBudget()

    async def deliver(self, owner: Owner, *, digest: bool = False) -> Outcome:
        conversation = Conversation(owner.open_kfid, owner.external_userid)
        key = {"k": owner.open_kfid, "u": owner.external_userid, "transient": TRANSIENT}
        async with self._pool.connection() as conn:
            names = [r[0] for r in await (await conn.execute(_PENDING_TEMPLATES, key)).fetchall()]
            if not names:
                return Outcome(None)
            row = await (
                await conn.execute(_CONVERSATION, (self._state_cache, owner.open_kfid, owner.external_userid))
            ).fetchone()
            prepared = {name: await self._templates(conn, name) for name in {*names, DEFAULT_TEMPLATE}}
        paused_until, state, window = row if row is not None else (None, None, None)
        wecom_failed = False
        window_open = window is not None and self._clock() < window + WINDOW
        if state is None and window_open:  # a closed window is decided without asking WeCom
            try:
                state = await self._session_state(conversation)
            except WeComError as exc:  # WeCom unreachable or refusing: decide later, not now
                log.warning(
                    "读取会话状态失败，推送稍后重试 / push delayed: reading the session state failed: %s",
                    type(exc).__name__,
                    extra={"decision": "push_state_failed"},
                )
                wecom_failed = True
        thumbs: dict[str, str] = {}
        try:
            for name, template in prepared.items():
                if isinstance(template, MiniProgramTemplate):
                    thumbs[name] = await self._thumb(template.thumb)
        except (WeComError, MediaError) as exc:
            log.warning(
                "小程序卡片缩略图上传失败，推送稍后重试 / push delayed: the card's thumb could not be uploaded: %s",
                type(exc).__name__,
                extra={"decision": "push_thumb_failed"},
            )
            wecom_failed = True
        async with self._pool.connection() as conn, conn.transaction():
            outcome = await self._decide_and_write(
                conn, owner, conversation, key, prepared, thumbs, paused_until, state, wecom_failed, digest
            )
        if outcome.msgid is not None:
            await self._defer_converse(conversation)
        if outcome.action is None:
            return outcome
        log.info(
            "推送 / push %s: %s%s",
            outcome.action.value if outcome.action else "none",
            outcome.reason.explain if outcome.reason else f"{outcome.sent} 个匹配 / match(es) sent",
            f" until {outcome.until:%Y-%m-%d %H:%M}Z" if outcome.until else "",
            extra={"decision": f"push_{outcome.reason.value if outcome.reason else 'sent'}"},
        )
        return outcome

    async def _decide_and_write(
        self,
        conn: AsyncConnection[Any],
        owner: Owner,
        conversation: Conversation,
        key: dict[str, Any],
        prepared: dict[str, Template],
        thumbs: dict[str, str],
        paused_until: datetime | None,
        state: int | None,
        wecom_failed: bool,
        digest: bool,
    ) -> Outcome:
        budget = await self._budget.lock(conn, conversation)
        now = self._clock()
        prefs = await store.get_preferences(conn, owner, self._defaults)
        zone = ZoneInfo(prefs.timezone)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_PENDING, key)
            matches = list(await cur.fetchall())
        if not matches:
            return Outcome(None)
        # Final reasons first: a cancelled or expired intent, a score under the customer's floor.
        live: list[dict[str, Any]] = []
        for match in matches:
            if match["intent_status"] != "active" or (match["expires_at"] and match["expires_at"] <= now):
                await self._record(conn, owner, [match], "retired", Reason.INTENT_INACTIVE, now)
            elif match["score"] < prefs.min_score:
                await self._record(conn, owner, [match], "retired", Reason.BELOW_MIN_SCORE, now)
            else:
                live.append(match)
        if not live:
            return Outcome(Action.DROP, Reason.BELOW_MIN_SCORE)
        per_intent: dict[int, int] = {}
        messages: set[str] = set()
        for intent_id, count, msgids in await (
            await conn.execute(
                _SENT_TODAY, (owner.open_kfid, owner.external_userid, local_day_start(now, zone))
            )
        ).fetchall():
            per_intent[intent_id] = count
            messages.update(m for m in msgids if m)
        room: dict[int, int] = {}
        available: list[dict[str, Any]] = []
        for match in live:
            left = room.setdefault(
                match["intent_id"], match["max_pushes_per_day"] - per_intent.get(match["intent_id"], 0)
            )
            if left > 0:
                room[match["intent_id"]] = left - 1
                available.append(match)
        if wecom_failed:
            decision = Decision(Action.WAIT, Reason.WECOM_ERROR, now + RETRY_AFTER_WECOM_ERROR)
        else:
            decision = decide(
                Situation(
                    now=now,
                    enabled=prefs.enabled,
                    budget=budget,
                    keep_for_replies=self._keep,
                    session_state=state,
                    paused_until=paused_until,
                    quiet=prefs.quiet,
                    zone=zone,
                    sent_today=len(messages),
                    daily_limit=prefs.daily_limit,
                    only_tomorrow=not available,
                    digest_hour=prefs.digest_hour,
                    digest_mode=prefs.mode == "digest",
                    digest_run=digest,
                )
            )
        if decision.action is Action.SEND:
            held = [m for m in live if m not in available]
            if held:  # at their intent's daily limit: tomorrow
                tomorrow = local_midnight_after(now, zone)
                await self._record(
                    conn, owner, held, "scheduled", Reason.INTENT_DAILY_LIMIT, now, due_at=tomorrow
                )
            return await self._send(conn, owner, conversation, available, prepared, thumbs, now)
        if decision.action is Action.WAIT:
            await self._record(conn, owner, live, "scheduled", decision.reason, now, due_at=decision.until)
            return Outcome(Action.WAIT, decision.reason, decision.until, waiting=len(live))
        assert decision.reason is not None
        status = "retired" if decision.reason.final else "dropped"
        await self._record(conn, owner, live, status, decision.reason, now)
        return Outcome(Action.DROP, decision.reason, waiting=len(live))

    async def _send(
        self,
        conn: AsyncConnection[Any],
        owner: Owner,
        conversation: Conversation,
        available: list[dict[str, Any]],
        prepared: dict[str, Template],
        thumbs: dict[str, str],
        now: datetime,
    ) -> Outcome:
        chosen = available[: self._max_items]
        name = chosen[0]["template"] or DEFAULT_TEMPLATE
        template = prepared.get(name) or prepared[DEFAULT_TEMPLATE]
        row = await (await conn.execute(_NEXT_NUMBER, (owner.open_kfid, owner.external_userid))).fetchone()
        number = int(row[0]) if row else 0
        items = []
        for offset, match in enumerate(chosen, start=1):
            items.append(
                Item(
                    match_id=number + offset,
                    profile_name=match["profile_name"],
                    intent_name=match["intent_name"],
                    score=float(match["score"]),
                    explanation=match["explanation"],
                    matched=[m["text"] for m in match["matched"]],
                    city=match["city"] or "",
                    company=match["company"] or "",
                    position=match["position"] or "",
                )
            )
        message: OutboxMessage
        if isinstance(template, MiniProgramTemplate):
            shown = items
            message = ("miniprogram", render_card(template, items, thumbs[name]))
        else:
            text, shown = render_text(template, items)
            message = ("text", {"content": text})
        source = f"push:{owner.open_kfid}:{owner.external_userid}:{number + 1}"
        msgids = await enqueue_messages(
            conn, conversation, [message], kind="push", source=source, now=now, keep=self._keep
        )
        if not msgids:  # the decision saw budget under the same lock: only a clock moving backwards gets here
            await self._record(conn, owner, chosen, "dropped", Reason.BUDGET_USED_UP, now)
            return Outcome(Action.DROP, Reason.BUDGET_USED_UP, waiting=len(chosen))
        for item, match in zip(shown, chosen, strict=False):
            await conn.execute(_MARK_PUSHED, (item.match_id, match["id"]))
            await _history(conn, owner, match, "sent", now, msgid=msgids[0], template=name)
        return Outcome(Action.SEND, msgid=msgids[0], sent=len(shown), waiting=len(chosen) - len(shown))

    async def _record(
        self,
        conn: AsyncConnection[Any],
        owner: Owner,
        matches: list[dict[str, Any]],
        status: str,
        reason: Reason | None,
        now: datetime,
        *,
        due_at: datetime | None = None,
    ) -> None:
        """Move matches to `status`; history gets a row for each match whose state actually changed."""
        history_status = {"scheduled": "scheduled", "dropped": "dropped", "retired": "skipped"}[status]
        reason_value = reason.value if reason else None
        changed = [
            m for m in matches if (m["status"], m["reason"], m["due_at"]) != (status, reason_value, due_at)
        ]
        if not changed:
            return
        await conn.execute(_MARK, (status, reason_value, due_at, [m["id"] for m in changed]))
        for match in changed:
            await _history(conn, owner, match, history_status, now, reason=reason_value, due_at=due_at)


async def _history(
    conn: AsyncConnection[Any],
    owner: Owner,
    match: dict[str, Any],
    status: str,
    now: datetime,
    *,
    reason: str | None = None,
    due_at: datetime | None = None,
    msgid: str | None = None,
    template: str | None = None,
) -> None:
    row = (match["id"], match["intent_id"], owner.open_kfid, owner.external_userid, status, reason, due_at)
    await conn.execute(_HISTORY, (*row, msgid, template, now))
