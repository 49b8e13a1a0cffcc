"""The FastAPI app factory. Settings are passed in; resources live in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from wxkf import __version__
from wxkf.config import Settings
from wxkf.db.engine import Database


def create_app(settings: Settings, *, database: Database | None = None) -> FastAPI:
    """Build the app. With `database` given the caller owns it; otherwise the lifespan opens one."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = database or await Database.open(settings)
        app.state.database = db
        try:
            yield
        finally:
            if database is None:
                await db.close()

    app = FastAPI(title="wxkf", version=__version__, lifespan=lifespan)
    app.state.settings = settings

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """The process is alive."""
        return {"status": "ok", "version": __version__}

    return app
