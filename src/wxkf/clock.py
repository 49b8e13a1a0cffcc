"""The clock seam: "now" for every rule that reads the wall clock (budget windows, quiet hours, media expiry).

Production reads the system clock; tests and the demo pass the simulator's (`SimClock.utcnow`), so
advancing the simulated time moves WeCom's 48 h window, the customer's quiet hours and a media_id's
3-day life together.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

Clock = Callable[[], datetime]  # an aware UTC datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def local_time(value: datetime | None, zone: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """`value` in the display timezone `zone` (CONTACT_TIMEZONE): how the console and the CLI show a
    stored (UTC) time; "" for none."""
    return value.astimezone(ZoneInfo(zone)).strftime(fmt) if value is not None else ""
