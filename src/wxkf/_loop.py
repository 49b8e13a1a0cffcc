"""Run a coroutine on uvloop when it is installed (Linux, macOS), else on asyncio's loop.

The worker spends most of its CPU in event-loop round trips (PostgreSQL, WeCom); uvloop makes
each one cheaper. `wxkf serve` and the simulator get the same loop from uvicorn's `loop="auto"`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # Windows: uvloop does not exist there
        return asyncio.run(main)
    return uvloop.run(main)
