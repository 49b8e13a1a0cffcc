"""A NUL character (U+0000), which PostgreSQL's text and jsonb cannot hold, never stops a conversation."""

from __future__ import annotations

from typing import Any

from tests.integration.kf_harness import ScriptedResponder, running_pipeline
from wxkf.kf.responder import Reply, ReplyRequest


async def test_a_message_with_a_nul_is_answered_and_the_account_keeps_syncing(settings_factory: Any) -> None:
    """One such message failed every sync of its account: no customer of it was answered again."""
    responder = ScriptedResponder()
    async with running_pipeline(settings_factory, responder) as run:
        first, second = run.sim.customers[0], run.sim.customers[1]
        await run.say(first, "运费\x00多少")
        await run.say(second, "运费怎么算")
        await run.until(lambda: _answered(run, first, second))
        await run.idle()
        assert await run.texts(first) == ["答复：运费多少"]
        assert await run.texts(second) == ["答复：运费怎么算"]


class _NulAnswer:
    """A model whose answer carries a NUL (it happens with some endpoints' streaming glitches)."""

    async def respond(self, request: ReplyRequest) -> Reply:
        return Reply(text="运费\x00满 99 元包邮")


async def test_an_answer_with_a_nul_is_sent_once_without_it(settings_factory: Any) -> None:
    async with running_pipeline(settings_factory, _NulAnswer()) as run:
        customer = run.sim.customers[0]
        await run.say(customer, "运费怎么算")
        await run.until(lambda: _got(run, customer))
        await run.idle()
        assert await run.texts(customer) == ["运费满 99 元包邮"]


async def _answered(run: Any, first: str, second: str) -> bool:
    return bool(await run.texts(first)) and bool(await run.texts(second))


async def _got(run: Any, customer: str) -> bool:
    return bool(await run.texts(customer))
