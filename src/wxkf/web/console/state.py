"""What the console keeps per process: the cookie signer, the change feed, the knowledge base, caches."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from wxkf.kf.runtime import PipelineNotConfigured
from wxkf.wecom.errors import WeComError

from .auth import CookieSigner, signing_key
from .conversations import learn_nicknames
from .live import ChangeFeed

if TYPE_CHECKING:
    from wxkf.agent.kb.embedders import Embedder
    from wxkf.agent.kb.store import KnowledgeBase
    from wxkf.config import Settings
    from wxkf.db.engine import Database
    from wxkf.kf.runtime import Pipeline
    from wxkf.push.service import PushService

ACCOUNT_NAMES_SECONDS = 300.0
NICKNAME_RETRY_SECONDS = 60.0  # after WeCom could not give nicknames, the list does not ask at every refresh


class ConsoleState:
    """Built when the app is; the resources open on first use, after the app's lifespan has started."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._signer: CookieSigner | None = None
        self._feed: ChangeFeed | None = None
        self._knowledge: KnowledgeBase | None = None
        self._accounts: tuple[float, dict[str, str]] = (0.0, {})
        self._nicknames_paused_until = 0.0

    @property
    def settings(self) -> Settings:
        settings: Settings = self.app.state.settings
        return settings

    @property
    def pipeline(self) -> Pipeline:
        pipeline: Pipeline = self.app.state.pipeline
        return pipeline

    @property
    def push(self) -> PushService:
        """The app's push service: the console's push pages call it as the REST API does."""
        push: PushService = self.app.state.push
        return push

    @property
    def database(self) -> Database:
        database: Database = self.app.state.database
        return database

    async def signer(self) -> CookieSigner:
        if self._signer is None:
            async with self.pipeline.pool.connection() as conn:
                self._signer = CookieSigner(await signing_key(conn))
        return self._signer

    @property
    def feed(self) -> ChangeFeed:
        if self._feed is None:
            self._feed = ChangeFeed(self.database.conninfo)
        return self._feed

    @property
    def knowledge(self) -> KnowledgeBase:
        if self._knowledge is None:
            from wxkf.agent.kb import KnowledgeBase

            self._knowledge = KnowledgeBase.from_settings(self.database, self.settings)
        return self._knowledge

    @property
    def embedder(self) -> Embedder:
        return self.knowledge.embedder

    async def account_names(self) -> dict[str, str]:
        """open_kfid → the kf account's name (kf/account/list), cached; {} when WeCom cannot say."""
        fetched, names = self._accounts
        if time.monotonic() - fetched < ACCOUNT_NAMES_SECONDS:
            return names
        try:
            response = await self.pipeline.client.list_accounts()
            names = {a.open_kfid: a.name for a in response.account_list}
        except (PipelineNotConfigured, WeComError):
            names = {}
        self._accounts = (time.monotonic(), names)
        return names

    async def learn_nicknames(self, external_userids: list[str]) -> bool:
        """True when nicknames were learnt (the list is read again); asks WeCom at most once a minute
        after it could not answer."""
        if not external_userids or time.monotonic() < self._nicknames_paused_until:
            return False
        learnt = await learn_nicknames(self.pipeline, external_userids)
        if learnt is None:
            self._nicknames_paused_until = time.monotonic() + NICKNAME_RETRY_SECONDS
        return bool(learnt)

    async def aclose(self) -> None:
        if self._feed is not None:
            await self._feed.aclose()
        if self._knowledge is not None:
            await self._knowledge.aclose()


def console_state(app: Any) -> ConsoleState:
    state: ConsoleState = app.state.console
    return state
