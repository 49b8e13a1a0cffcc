"""The staff console at `/console`: live conversations, takeover, push, knowledge, unanswered questions.

Server-rendered (Jinja2, one small script in `static/`, no build step, nothing from a CDN), Chinese
first with English beside it. Pages:

    /console/conversations   every conversation, live (SSE from PostgreSQL LISTEN/NOTIFY), filters, search
    /console/c/<kf>/<user>   the transcript; take over, reply, hand back, transfer in WeCom, end the session
    /console/push            customers' push intents: filter, create by hand, cancel
    /console/push/intents/<id>   one intent: conditions, matches with scores, pushes and refusals
    /console/push/matches, /history   matches waiting / sent / refused, and every push decision
    /console/push/profiles   import (CSV, JSON Lines) and add profiles                          (admin)
    /console/push/templates  text and mini-program card templates, a card's cover uploaded    (admin)
    /console/kb              upload (with progress), list, delete, re-index, search preview    (admin)
    /console/unanswered      questions the bot could not answer, grouped, one click to an entry  (admin)
    /console/overview        today's figures, errors with their fix, LLM latency                 (admin)
    /console/doctor          the `wxkf doctor` checks                                            (admin)
    /console/users, /audit   staff accounts and the audit log of every staff action             (admin)

`install(app)` is all the app factory needs; `wxkf console add-user` creates the first admin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .state import ConsoleState


def install(app: FastAPI) -> ConsoleState:
    """Add the console's routes, static files and refusal pages (an unknown /console address too); returns its state (close it with the app)."""
    # Imported here: `wxkf console add-user` and `wxkf --help` load this package without FastAPI.
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    from .routes import PREFIX, STATIC, NotLoggedIn, Refused, http_error, not_logged_in, refused, router
    from .state import ConsoleState

    state = ConsoleState(app)
    app.state.console = state
    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_exception_handler(NotLoggedIn, not_logged_in)
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(HTTPException, http_error)  # /console's 404 and 405 as pages; others unchanged
    return state
