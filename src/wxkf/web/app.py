"""The FastAPI app factory. Settings are passed in; resources live in the lifespan.

The lifespan opens the database and the conversation pipeline (`wxkf.kf.runtime.Pipeline`), which
the `/wecom/callback` route records into; with `run_worker=True` the same process also runs the
pipeline's jobs (`wxkf serve --worker`), otherwise `wxkf worker` processes run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from wxkf import __version__
from wxkf.clock import Clock, utcnow
from wxkf.config import Settings
from wxkf.db.engine import Database
from wxkf.kf.callback import CallbackReceiver, add_callback_routes
from wxkf.kf.responder import Responder
from wxkf.kf.runtime import Pipeline
from wxkf.ops.health import install as install_ops
from wxkf.push.service import PushService
from wxkf.web import api
from wxkf.web.console import install as install_console
from wxkf.wecom.client import WeComClient

SERVE_WORKER_ENV = "WXKF_SERVE_WORKER"  # `wxkf serve --processes N` tells its processes --worker or not


def serve_app() -> FastAPI:
    """The app of one `wxkf serve --processes N` process, built in that process.

    uvicorn starts each process afresh and calls this factory there, so the settings are read again
    from the same environment, and `--worker/--no-worker` comes in WXKF_SERVE_WORKER.
    """
    from wxkf import _loop
    from wxkf.config import load_settings
    from wxkf.ops.logging import configure_logging

    settings = load_settings()
    configure_logging(settings)
    web_app = create_app(settings, run_worker=os.environ.get(SERVE_WORKER_ENV, "1") == "1")
    _loop.freeze_heap()
    return web_app


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    run_worker: bool = False,
    client: WeComClient | None = None,
    responder: Responder | None = None,
    clock: Clock = utcnow,
) -> FastAPI:
    """Build the app. With `database` given the caller owns it; otherwise the lifespan opens one.

    `client` and `responder` replace the ones built from the settings (tests, the demo); `clock` is
    push's "now" (the simulator's in tests and the demo).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = database or await Database.open(settings)
        app.state.database = db
        pipeline = Pipeline(settings, db, client=client)
        push = app.state.push = PushService(settings, pipeline, clock=clock)
        if responder is not None:
            pipeline.use_responder(push.replies(responder))  # replies to a push come before the responder
        await pipeline.open()
        app.state.pipeline = pipeline
        receiver = app.state.callback_receiver = CallbackReceiver(settings, pipeline)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(console.aclose)
            worker = None
            if run_worker:
                if responder is None:
                    from wxkf.service import agent_responder  # the surface plugs the agent in

                    agent = await stack.enter_async_context(agent_responder(settings, db, pipeline, push))
                    pipeline.use_responder(push.replies(agent))
                worker = asyncio.create_task(pipeline.run_worker())
            try:
                yield
            finally:
                if worker is not None:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker
        await receiver.close()
        await push.aclose()
        await pipeline.close()
        if database is None:
            await db.close()

    app = FastAPI(title="wxkf", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    add_callback_routes(app)
    install_ops(app)
    console = install_console(app)
    api.install(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """The process is alive."""
        return {"status": "ok", "version": __version__}

    return app
