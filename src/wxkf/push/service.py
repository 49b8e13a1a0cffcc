"""The push service: what the REST API, the CLI, the agent's tools and the worker's jobs call.

    push = PushService(settings, pipeline)         # registers its jobs on the pipeline's procrastinate app
    intent = await push.create_intent(IntentIn(...))   # → job push:match_intent → push:deliver
    await push.create_profile(ProfileIn(...))          # → job push:match_profiles → push:deliver

Jobs (procrastinate, on the pipeline's app and pool):

    push:match_intent(intent_id)       one at a time per intent, coalesced while queued
    push:match_profiles(profile_ids)   a chunk of new or changed profiles against every intent
    push:deliver(open_kfid, external_userid)   one at a time per customer, coalesced while queued
    push:tick     periodic (PUSH_TICK_CRON): scheduled pushes that are due → push:deliver
    push:digest   periodic, hourly: customers whose digest hour it is, with pending matches → push:deliver

Batches (the tick, the digest) are spread to PUSH_SENDS_PER_MINUTE, under WeCom's per-API limits.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from procrastinate import RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.types import JSONValue
from psycopg import AsyncConnection

from wxkf.agent.kb.embedders import Embedder, make_embedder
from wxkf.agent.llm import LLMClient, LLMUnavailableError
from wxkf.clock import Clock, utcnow
from wxkf.config import Settings
from wxkf.kf import jobs as kf_jobs
from wxkf.kf.responder import Conversation, Responder
from wxkf.kf.runtime import PipelineNotConfigured
from wxkf.media.uploads import UploadCache
from wxkf.ops.logging import log_context
from wxkf.push import store
from wxkf.push.delivery import TRANSIENT, Deliveries, Outcome
from wxkf.push.errors import InvalidInput, NotFound, validated
from wxkf.push.matching import Matcher, MatchRun, owners_of
from wxkf.push.models import (
    HistoryEntry,
    Intent,
    IntentIn,
    IntentPatch,
    Match,
    Owner,
    Preferences,
    PreferencesPatch,
    Profile,
    ProfileIn,
    ProfilePatch,
)
from wxkf.push.replies import Command, Parsed, PushReplies
from wxkf.push.scoring import Weights
from wxkf.push.templates import DEFAULT_TEMPLATE, MiniProgramTemplate, Template, TextTemplate, check
from wxkf.push.vectors import Vectors
from wxkf.wecom.errors import RateLimitedError, TransportError
from wxkf.wecom.models import MEDIA_MAX_BYTES

if TYPE_CHECKING:
    from wxkf.kf.runtime import Pipeline

log = logging.getLogger("wxkf.push")

MATCH_INTENT = "push:match_intent"
MATCH_PROFILES = "push:match_profiles"
DELIVER = "push:deliver"
TICK = "push:tick"
DIGEST = "push:digest"
PROFILE_CHUNK = 200  # profiles per push:match_profiles job
RETRY = RetryStrategy(
    max_attempts=8,
    exponential_wait=2,
    retry_exceptions={RateLimitedError, TransportError, LLMUnavailableError},
)

_DUE = """
SELECT DISTINCT open_kfid, external_userid FROM push_matches
WHERE status = 'scheduled' AND due_at <= %s LIMIT %s
"""
_PURGE_DRAFTS = "DELETE FROM push_intents WHERE status = 'draft' AND created_at < %s - interval '1 day'"
_DIGEST_OWNERS = """
SELECT DISTINCT m.open_kfid, m.external_userid, pr.timezone, pr.digest_hour, pr.mode
FROM push_matches m
LEFT JOIN push_preferences pr ON pr.open_kfid = m.open_kfid AND pr.external_userid = m.external_userid
WHERE (m.status = 'pending' OR (m.status = 'dropped' AND m.reason = ANY(%s)))
  AND coalesce(pr.enabled, true)
"""


class PushService:
    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        *,
        clock: Clock = utcnow,
        embedder: Callable[[], Embedder] | None = None,
        llm: LLMClient | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.clock = clock
        self.pool = pipeline.pool
        self.vectors = Vectors(self.pool, embedder or (lambda: make_embedder(settings)))
        if llm is None and settings.push_llm_rerank:
            llm = LLMClient.from_settings(settings)
        self._llm = llm
        self._uploads: UploadCache | None = None
        self.defaults = Preferences(
            enabled=True,
            quiet_hours=settings.push_quiet_hours,
            timezone=settings.push_timezone,
            daily_limit=settings.push_daily_limit,
            min_score=settings.push_min_score,
            digest_hour=settings.push_digest_hour,
        )
        self.matcher = Matcher(
            self.pool,
            self.vectors,
            weights=Weights(
                settings.push_weight_preferred, settings.push_weight_keywords, settings.push_weight_semantic
            ),
            default_threshold=settings.push_default_threshold,
            semantic_candidates=settings.push_semantic_candidates,
            top_candidates=settings.push_top_candidates,
            llm=llm,
            llm_weight=settings.push_weight_llm,
            clock=clock,
        )
        self.deliveries = Deliveries(
            self.pool,
            lambda conversation: kf_jobs.defer_converse(pipeline.procrastinate, conversation),
            defaults=self.defaults,
            keep_for_replies=settings.push_keep_for_replies,
            max_items=settings.push_max_items,
            state_cache_seconds=settings.kf_state_cache_seconds,
            clock=clock,
            templates=self._template,
            thumb_media_id=lambda digest: self.uploads.media_id("image", digest, "cover"),
            session_state=self._session_state,
        )
        self._register()

    @property
    def uploads(self) -> UploadCache:
        """The pipeline's upload cache on push's clock (one table: a cover uploaded once serves every
        push), built on first use: a process that only saves templates needs no WeCom secret."""
        if self._uploads is None:
            self._uploads = UploadCache(
                self.pool,
                self.pipeline.client,
                self.pipeline.media_store,
                margin=timedelta(hours=self.settings.media_refresh_margin_hours),
                clock=self.clock,
            )
        return self._uploads

    async def aclose(self) -> None:
        await self.vectors.aclose()
        if self._llm is not None:
            await self._llm.aclose()

    def replies(self, responder: Responder) -> PushReplies:
        """`responder` with push commands (查看1, 退订 …) answered first (the pipeline's responder)."""
        return PushReplies(self, responder)

    # --- jobs -------------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.pipeline.procrastinate
        app.task(name=MATCH_INTENT, retry=RETRY)(self._match_intent_job)
        app.task(name=MATCH_PROFILES, retry=RETRY)(self._match_profiles_job)
        app.task(name=DELIVER, retry=RETRY)(self._deliver_job)
        tick = app.task(name=TICK)(self._tick_job)
        app.periodic(cron=self.settings.push_tick_cron, periodic_id="push-tick")(tick)
        digest = app.task(name=DIGEST)(self._digest_job)
        app.periodic(cron="0 * * * *", periodic_id="push-digest")(digest)

    async def _match_intent_job(self, intent_id: int) -> None:
        await self._after_matching(await self.matcher.match_intent(intent_id))

    async def _match_profiles_job(self, profile_ids: list[int]) -> None:
        await self._after_matching(await self.matcher.match_profiles(profile_ids))

    async def _deliver_job(self, open_kfid: str, external_userid: str, digest: bool = False) -> None:
        with log_context(open_kfid=open_kfid, external_userid=external_userid):
            await self.deliver(Owner(open_kfid=open_kfid, external_userid=external_userid), digest=digest)

    async def _tick_job(self, timestamp: int) -> None:
        await self.tick()

    async def _digest_job(self, timestamp: int) -> None:
        await self.digest()

    async def _after_matching(self, run: MatchRun) -> None:
        for owner in owners_of(run):
            await self.defer_deliver(owner)

    async def defer_match_intent(self, intent_id: int) -> None:
        lock = f"push-intent:{intent_id}"
        with contextlib.suppress(AlreadyEnqueued):
            await self.pipeline.procrastinate.configure_task(
                MATCH_INTENT, lock=lock, queueing_lock=lock
            ).defer_async(intent_id=intent_id)

    async def defer_match_profiles(self, profile_ids: Sequence[int]) -> None:
        ids = list(profile_ids)
        for start in range(0, len(ids), PROFILE_CHUNK):
            await self.pipeline.procrastinate.configure_task(MATCH_PROFILES).defer_async(
                profile_ids=list[JSONValue](ids[start : start + PROFILE_CHUNK])
            )

    async def defer_deliver(self, owner: Owner, *, delay: float = 0.0, digest: bool = False) -> bool:
        lock = f"push-deliver:{owner.open_kfid}:{owner.external_userid}"
        task = self.pipeline.procrastinate.configure_task(
            DELIVER, lock=lock, queueing_lock=lock, schedule_in={"seconds": delay} if delay > 0 else None
        )
        try:
            await task.defer_async(
                open_kfid=owner.open_kfid, external_userid=owner.external_userid, digest=digest
            )
        except AlreadyEnqueued:
            return False
        return True

    async def _spread(self, owners: list[Owner], *, digest: bool = False) -> int:
        """Defer deliveries for `owners`, at most PUSH_SENDS_PER_MINUTE a minute (wecom-api §10)."""
        gap = 60.0 / self.settings.push_sends_per_minute
        queued = 0
        for index, owner in enumerate(owners):
            queued += await self.defer_deliver(owner, delay=index * gap, digest=digest)
        return queued

    async def tick(self) -> int:
        """Deliveries for every scheduled push that is due (the push:tick job); returns how many were queued.

        Drafts of create_intent that nobody confirmed within a day are removed on the way.
        """
        async with self.pool.connection() as conn:
            await conn.execute(_PURGE_DRAFTS, (self.clock(),))
            rows = await (
                await conn.execute(_DUE, (self.clock(), 10 * self.settings.push_sends_per_minute))
            ).fetchall()
        return await self._spread([Owner(open_kfid=k, external_userid=u) for k, u in rows])

    async def digest(self) -> int:
        """The daily digest: customers whose local digest hour it is now and who have pending matches."""
        now = self.clock()
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_DIGEST_OWNERS, (TRANSIENT,))).fetchall()
        due: list[Owner] = []
        for open_kfid, external_userid, zone, hour, _mode in rows:
            digest_hour = hour if zone is not None else self.defaults.digest_hour
            if digest_hour is None:
                continue
            local = now.astimezone(ZoneInfo(zone or self.defaults.timezone))
            if local.hour == digest_hour:
                due.append(Owner(open_kfid=open_kfid, external_userid=external_userid))
        return await self._spread(due, digest=True)

    async def deliver(self, owner: Owner, *, digest: bool = False) -> Outcome:
        return await self.deliveries.deliver(owner, digest=digest)

    async def _session_state(self, conversation: Conversation) -> int | None:
        try:
            states = self.pipeline.states
        except PipelineNotConfigured:
            return None
        return (await states.get(conversation)).state

    async def _template(self, conn: AsyncConnection[Any], name: str) -> Template:
        found = await store.get_template_row(conn, name)
        if found is None:
            return TextTemplate()
        kind, body = found
        return (
            MiniProgramTemplate.model_validate(body)
            if kind == "miniprogram"
            else TextTemplate.model_validate(body)
        )

    async def _known_customer(self, conn: AsyncConnection[Any], owner: Owner) -> None:
        """Refuse an owner push could never reach: an account that is not this deployment's, or a
        customer who never wrote to it (wecom-api §4: an account may only write to a customer who wrote)."""
        wrote, account_seen = await store.customer_seen(conn, owner)
        if wrote:
            return
        listed = {a.strip() for a in self.settings.kf_accounts.split(",") if a.strip()}
        if not (account_seen or owner.open_kfid in listed):
            raise InvalidInput(
                [
                    f"open_kfid: {owner.open_kfid} 不是本部署的客服账号（没有客户给它发过消息，KF_ACCOUNTS 中也没有）"
                    " / not one of this deployment's kf accounts: no customer wrote to it, KF_ACCOUNTS does not list it"
                ]
            )
        raise InvalidInput(
            [
                f"external_userid: 客户 {owner.external_userid} 从未给客服账号 {owner.open_kfid} 发过消息，"
                "无法向其推送 / this customer has never written to this kf account, so nothing can reach them"
            ]
        )

    # --- intents ----------------------------------------------------------------------------------

    async def create_intent(
        self, intent: IntentIn, *, created_by: str = "api", status: str = "active", match: bool = True
    ) -> Intent:
        """Refused for a customer the account never heard from (`_known_customer`)."""
        if intent.expires_at is not None and intent.expires_at <= self.clock():
            raise InvalidInput(["expires_at: 已经过去 / is in the past"])
        threshold = intent.threshold if intent.threshold is not None else self.settings.push_default_threshold
        async with self.pool.connection() as conn:
            await self._known_customer(conn, intent)
            created = await store.insert_intent(
                conn, intent, threshold=threshold, status=status, created_by=created_by
            )
        if match and created.status == "active":
            await self.defer_match_intent(created.id)
        return created

    async def get_intent(self, intent_id: int) -> Intent:
        async with self.pool.connection() as conn:
            return await store.get_intent(conn, intent_id)

    async def list_intents(self, owner: Owner | None = None, **filters: Any) -> list[Intent]:
        async with self.pool.connection() as conn:
            return await store.list_intents(conn, owner, **filters)

    async def update_intent(self, intent_id: int, patch: IntentPatch) -> Intent:
        async with self.pool.connection() as conn, conn.transaction():
            current = await store.get_intent(conn, intent_id, for_update=True)
            if current.status == "cancelled":
                raise InvalidInput([f"意图 {intent_id} 已取消 / intent {intent_id} is cancelled"])
            changes = patch.model_dump(exclude_unset=True)
            status = changes.pop("status", None) or current.status
            merged = validated(
                IntentIn, {**current.model_dump(include=set(IntentIn.model_fields)), **changes}
            )
            reembed = any(k in changes for k in ("name", "description", "conditions"))
            threshold = merged.threshold if merged.threshold is not None else current.threshold
            updated = await store.update_intent(
                conn, intent_id, merged, threshold=threshold, status=status, reembed=reembed
            )
        if updated.status == "active":
            await self.defer_match_intent(updated.id)
        return updated

    async def set_intent_status(self, intent_id: int, status: str, *, owner: Owner | None = None) -> Intent:
        async with self.pool.connection() as conn, conn.transaction():
            current = await store.get_intent(conn, intent_id, for_update=True)
            if owner is not None and (current.open_kfid, current.external_userid) != (
                owner.open_kfid,
                owner.external_userid,
            ):
                raise NotFound(f"没有编号为 {intent_id} 的意图 / no intent {intent_id}")
            if current.status == "cancelled" and status != "cancelled":
                raise InvalidInput([f"意图 {intent_id} 已取消 / intent {intent_id} is cancelled"])
            updated = await store.set_intent_status(conn, intent_id, status)
        if status == "active":
            await self.defer_match_intent(intent_id)
        return updated

    async def match_now(self, intent_id: int) -> tuple[MatchRun, list[Match]]:
        """Match an intent at once (CLI, API) and start the deliveries; returns the run and its matches."""
        await self.get_intent(intent_id)
        run = await self.matcher.match_intent(intent_id)
        await self._after_matching(run)
        return run, await self.list_matches(intent_id=intent_id)

    # --- profiles ---------------------------------------------------------------------------------

    async def create_profile(
        self, profile: ProfileIn, *, created_by: str = "api", status: str = "active"
    ) -> Profile:
        async with self.pool.connection() as conn:
            created = await store.insert_profile(conn, profile, status=status, created_by=created_by)
        if created.status == "active":
            await self.defer_match_profiles([created.id])
        return created

    async def get_profile(self, profile_id: int) -> Profile:
        async with self.pool.connection() as conn:
            return await store.get_profile(conn, profile_id)

    async def list_profiles(self, **filters: Any) -> list[Profile]:
        async with self.pool.connection() as conn:
            return await store.list_profiles(conn, **filters)

    async def update_profile(self, profile_id: int, patch: ProfilePatch) -> Profile:
        async with self.pool.connection() as conn, conn.transaction():
            current = await store.get_profile(conn, profile_id)
            merged = validated(
                ProfileIn,
                {
                    **current.model_dump(include=set(ProfileIn.model_fields)),
                    **patch.model_dump(exclude_unset=True),
                },
            )
            updated = await store.update_profile(conn, profile_id, merged)
        if updated.status == "active":
            await self.defer_match_profiles([updated.id])
        return updated

    async def set_profile_status(self, profile_id: int, status: str) -> Profile:
        async with self.pool.connection() as conn, conn.transaction():
            updated = await store.set_profile_status(conn, profile_id, status)
        if status == "active":
            await self.defer_match_profiles([profile_id])
        return updated

    async def import_profiles(
        self,
        profiles: Sequence[ProfileIn],
        *,
        created_by: str = "import",
        progress: Callable[[int], None] | None = None,
    ) -> list[int]:
        """Write every profile in one transaction (all or nothing), then match the written ones."""
        ids: list[int] = []
        async with self.pool.connection() as conn, conn.transaction():
            for start in range(0, len(profiles), PROFILE_CHUNK):
                ids += await store.upsert_profiles(
                    conn, profiles[start : start + PROFILE_CHUNK], created_by=created_by
                )
                if progress is not None:
                    progress(min(start + PROFILE_CHUNK, len(profiles)))
        await self.defer_match_profiles(ids)
        return ids

    # --- matches, history, preferences ------------------------------------------------------------

    async def list_matches(self, **filters: Any) -> list[Match]:
        async with self.pool.connection() as conn:
            return await store.list_matches(conn, **filters)

    async def get_match(self, match_id: int) -> Match:
        async with self.pool.connection() as conn:
            return await store.get_match(conn, match_id)

    async def feedback(self, match_id: int, feedback: str) -> Match:
        async with self.pool.connection() as conn:
            await store.get_match(conn, match_id)
            await store.set_feedback(conn, match_id, feedback, self.clock())
            return await store.get_match(conn, match_id)

    async def history(self, **filters: Any) -> list[HistoryEntry]:
        async with self.pool.connection() as conn:
            return await store.list_history(conn, **filters)

    async def preferences(self, owner: Owner) -> Preferences:
        async with self.pool.connection() as conn:
            return await store.get_preferences(conn, owner, self.defaults)

    async def set_preferences(self, owner: Owner, patch: PreferencesPatch) -> Preferences:
        """Refused for a customer the account never heard from (`_known_customer`)."""
        async with self.pool.connection() as conn, conn.transaction():
            await self._known_customer(conn, owner)
            current = await store.get_preferences(conn, owner, self.defaults)
            changes = patch.model_dump(exclude_unset=True)
            if changes.get("digest_hour") == -1:
                changes["digest_hour"] = None
            prefs = validated(Preferences, {**current.model_dump(), **changes})
            await store.set_preferences(conn, owner, prefs)
        if prefs.enabled:
            await self.defer_deliver(owner)  # matches held by the old rules may go now
        return prefs

    # --- templates ----------------------------------------------------------------------------------

    async def save_thumb(self, data: bytes, filename: str) -> str:
        """Keep a card's cover image; its digest is the template's `thumb` (uploaded when first sent)."""
        if not data.startswith((b"\x89PNG", b"\xff\xd8\xff")):
            raise InvalidInput(
                ["thumb: 封面须是 JPG 或 PNG 图片 / the cover must be a JPG or PNG (wecom-api §8)"]
            )
        if len(data) > MEDIA_MAX_BYTES["image"]:  # wecom-api §8: media/upload refuses it when sent
            limit = MEDIA_MAX_BYTES["image"] >> 20
            raise InvalidInput([f"thumb: 封面超过 {limit} MB / the cover is over {limit} MB (wecom-api §8)"])
        return await self.pipeline.media_store.put(data)

    async def save_template(self, name: str, template: Template) -> Template:
        """Check and save a template; a card's `thumb` must be a saved image (`save_thumb`)."""
        if not name.strip() or len(name) > 64:
            raise InvalidInput(["name: 1–64 个字符 / 1-64 characters"])
        check(template)
        if isinstance(template, MiniProgramTemplate):
            await self.pipeline.media_store.get(template.thumb)  # MediaNotFound: save_thumb first
        async with self.pool.connection() as conn:
            await store.set_template_row(conn, name, template.kind, template.model_dump(exclude={"kind"}))
        return template

    async def get_template(self, name: str) -> Template:
        async with self.pool.connection() as conn:
            if name != DEFAULT_TEMPLATE and await store.get_template_row(conn, name) is None:
                raise NotFound(f"没有名为 {name} 的模板 / no template {name}")
            return await self._template(conn, name)

    async def list_templates(self) -> list[tuple[str, Template]]:
        async with self.pool.connection() as conn:
            rows = await store.list_template_rows(conn)
        found: list[tuple[str, Template]] = []
        for name, kind, body, _updated in rows:
            found.append(
                (
                    name,
                    MiniProgramTemplate.model_validate(body)
                    if kind == "miniprogram"
                    else TextTemplate.model_validate(body),
                )
            )
        if DEFAULT_TEMPLATE not in {n for n, _ in found}:
            found.insert(0, (DEFAULT_TEMPLATE, TextTemplate()))
        return found

    async def delete_template(self, name: str) -> None:
        async with self.pool.connection() as conn:
            if not await store.delete_template_row(conn, name):
                raise NotFound(f"没有名为 {name} 的模板 / no template {name}")

    # --- replies to a push (PushReplies) ----------------------------------------------------------

    async def answer_command(self, owner: Owner, parsed: Parsed) -> str | None:
        """The reply to a push command, or None when it is not one for this customer."""
        async with self.pool.connection() as conn:
            if parsed.command is Command.UNSUBSCRIBE:
                await self._set_enabled(conn, owner, False)
                log.info("客户退订推送 / the customer unsubscribed", extra={"decision": "push_unsubscribed"})
                return "已为您关闭匹配推送，不会再收到新的匹配通知。回复「订阅」可重新开启。"
            if parsed.command is Command.SUBSCRIBE:
                prefs = await store.get_preferences(conn, owner, self.defaults)
                if prefs.enabled:
                    return None
                await self._set_enabled(conn, owner, True)
                return "已为您重新开启匹配推送。"
            numbers = await store.pushed_numbers(conn, owner)
            if numbers is None:
                return None  # no push ever reached this customer: the words mean something else
            found = await store.match_by_number(conn, owner, parsed.number)
            if found is None:
                return f"没有编号为 {parsed.number} 的匹配。您收到的匹配编号为 {numbers[0]}–{numbers[1]}。"
            if parsed.command is Command.NOT_INTERESTED:
                await store.set_feedback(conn, found["id"], "not_interested", self.clock())
                return f"好的，已记录您对编号 {found['number']}（{found['name']}）不感兴趣。回复「退订」可关闭全部推送。"
            await store.set_feedback(conn, found["id"], "viewed", self.clock())
            return details_text(found)

    async def _set_enabled(self, conn: AsyncConnection[Any], owner: Owner, enabled: bool) -> None:
        prefs = await store.get_preferences(conn, owner, self.defaults)
        await store.set_preferences(conn, owner, prefs.model_copy(update={"enabled": enabled}))


def details_text(found: dict[str, Any]) -> str:
    """What 查看N shows: the profile, and why it matched."""
    lines = [f"📇 编号 {found['number']}：{found['name']}"]
    facts = [
        f"{label}：{found[key]}"
        for key, label in (
            ("city", "城市"),
            ("company", "公司"),
            ("position", "职位"),
            ("industry", "行业"),
            ("education", "学历"),
            ("gender", "性别"),
            ("age", "年龄"),
        )
        if found.get(key) not in (None, "")
    ]
    if facts:
        lines.append(" · ".join(facts))
    if found.get("tags"):
        lines.append("标签：" + "、".join(found["tags"]))
    for key, value in (found.get("attributes") or {}).items():
        lines.append(f"{key}：{value}")
    if found.get("description"):
        description = str(found["description"])
        lines.append("简介：" + (description[:300] + "…" if len(description) > 300 else description))
    lines.append(
        f"匹配「{found['intent_name']}」：{found['explanation']}（匹配度 {round(found['score'] * 100)}%）"
    )
    lines.append(f"回复「不感兴趣 {found['number']}」告诉我们不合适。")
    return "\n".join(lines)
