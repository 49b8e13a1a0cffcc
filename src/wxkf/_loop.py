"""How the long-running processes run: the event loop, and the garbage collector after start-up.

The worker spends most of its CPU in event-loop round trips (PostgreSQL, WeCom); uvloop makes
each one cheaper. `wxkf serve` and the simulator get the same loop from uvicorn's `loop="auto"`.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # Windows: uvloop does not exist there
        return asyncio.run(main)
    return uvloop.run(main)


def freeze_heap() -> None:
    """Take what start-up built (modules, the app, its routes and models) out of the collector's scans.

    Those objects live as long as the process, yet every full collection walked them all again: on
    the callback route that was a tenth of the server's CPU. Called once, when start-up is done;
    objects created later are collected as usual.
    """
    gc.collect()
    gc.freeze()
