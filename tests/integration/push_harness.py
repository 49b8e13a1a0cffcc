"""Push end to end: the pipeline harness with push's defaults for tests, and what a customer received.

async with push_pipeline(settings_factory) as run:
    await at_local_hour(run, 10)                # the simulated clock: 10:00 in Asia/Shanghai
    await run.say(customer, "你好")              # opens WeCom's 48 h window
    await run.push.create_intent(...)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection

from tests.integration.kf_harness import RunningPipeline, ScriptedResponder, running_pipeline
from wxkf.demo import PROFILES
from wxkf.kf.budget import ReplyBudget
from wxkf.kf.responder import Conversation, Responder
from wxkf.push.models import IntentIn, Owner, ProfileIn
from wxkf.push.service import PushService

SHANGHAI = ZoneInfo("Asia/Shanghai")


class PushRun:
    """A running pipeline and its push service."""

    def __init__(self, run: RunningPipeline) -> None:
        self.run = run
        self.sim = run.sim
        self.push: PushService = run.app.state.push

    def owner(self, customer: str) -> Owner:
        return Owner(open_kfid=self.sim.open_kfid, external_userid=customer)

    async def now(self) -> datetime:
        clock = await self.run.control("clock")
        return datetime.fromtimestamp(clock["now"], UTC)

    async def advance(self, seconds: float) -> None:
        await self.run.control("advance", seconds)

    async def pushes(self, customer: str) -> list[dict[str, Any]]:
        """What the customer received from push (outbox msgids of kind push start with "p")."""
        return [r for r in await self.run.received(customer) if r["msgid"].startswith("p")]

    async def push_texts(self, customer: str) -> list[str]:
        return [r["text"]["content"] for r in await self.pushes(customer) if r["msgtype"] == "text"]

    async def intent(self, customer: str, **fields: Any) -> int:
        values: dict[str, Any] = {
            "name": "寻找AI合作伙伴",
            "description": "想找北京做 AI 的创业伙伴",
            "conditions": {
                "required": [{"field": "city", "op": "eq", "value": "北京"}],
                "keywords": ["AI", "创业"],
            },
            "threshold": 0.5,
            **fields,
        }
        created = await self.push.create_intent(IntentIn(**self.owner(customer).model_dump(), **values))
        return created.id

    async def profile(self, name: str = "张三", **fields: Any) -> int:
        """The demo's first profile (a Beijing AI founder), renamed and changed by `fields`."""
        created = await self.push.create_profile(ProfileIn(**{**PROFILES[0], "name": name, **fields}))
        return created.id

    async def history(self, customer: str) -> list[tuple[str, str | None]]:
        entries = await self.push.history(owner=self.owner(customer))
        return [(e.status, e.reason) for e in reversed(entries)]


async def customer_wrote(conn: AsyncConnection[Any], open_kfid: str, external_userid: str) -> None:
    """What a customer's message leaves for push to find, the budget's record of it, for tests that
    run no simulator: push takes intents and preferences only for customers who wrote."""
    await ReplyBudget().record_customer_message(
        conn, Conversation(open_kfid, external_userid), datetime.now(UTC)
    )


async def at_local_hour(run: PushRun, hour: int, minute: int = 0) -> datetime:
    """Advance the simulated clock to the next hour:minute in Asia/Shanghai; returns that time (UTC)."""
    now = await run.now()
    local = now.astimezone(SHANGHAI)
    target = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= local:
        target += timedelta(days=1)
    await run.advance((target - local).total_seconds())
    return target.astimezone(UTC)


@asynccontextmanager
async def push_pipeline(
    settings_factory: Any, responder: Responder | None = None, **overrides: Any
) -> AsyncIterator[PushRun]:
    values = {"push_tick_cron": "* * * * * *", **overrides}  # the tick every second, not every minute
    async with running_pipeline(settings_factory, responder or ScriptedResponder(), **values) as run:
        yield PushRun(run)
