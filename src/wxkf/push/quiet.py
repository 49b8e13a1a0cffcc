"""Quiet hours: a daily span of local time in the customer's time zone when nothing is pushed.

    22:00-08:00  crosses midnight: quiet from 22:00 until 08:00 the next morning
    12:30-14:00  within a day
    (empty)      never quiet

Minute granularity; the start is inside the span, the end is not (08:00 itself is not quiet). The
local day comes from the IANA time zone (`zoneinfo`), so a push at 23:30 in Shanghai waits until
08:00 Shanghai time whatever the server's own clock or zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _clock_time(hour: str, minute: str, text: str) -> time:
    h, m = int(hour), int(minute)
    if h > 23 or m > 59:
        raise ValueError(f"静默时段的时间无效 / invalid time in quiet hours {text!r} (00:00–23:59)")
    return time(h, m)


@dataclass(frozen=True)
class QuietHours:
    """[start, end) in local wall-clock time; `start > end` crosses midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """`HH:MM-HH:MM`, or empty for none. Raises ValueError naming the fix."""
        if not text.strip():
            return None
        match = _SPAN.match(text)
        if match is None:
            raise ValueError(
                f"静默时段格式应为 HH:MM-HH:MM（如 22:00-08:00），留空表示不设 / quiet hours must look like "
                f"22:00-08:00 (or be empty), got {text!r}"
            )
        start = _clock_time(match[1], match[2], text)
        end = _clock_time(match[3], match[4], text)
        if start == end:
            raise ValueError(
                f"静默时段的开始和结束不能相同 / quiet hours must not start and end at the same minute: {text!r}"
            )
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, local: time) -> bool:
        minute = local.replace(second=0, microsecond=0, tzinfo=None)
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def ends_after(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """When the quiet span containing `now` ends (UTC), or None when `now` is not quiet."""
        local = now.astimezone(zone)
        if not self.contains(local.timetz()):
            return None
        day = local.date()
        if self.start > self.end and local.time() >= self.start:
            day += timedelta(days=1)  # 23:30 → the end is tomorrow morning
        return datetime.combine(day, self.end, tzinfo=zone).astimezone(UTC)


def local_midnight_after(now: datetime, zone: ZoneInfo) -> datetime:
    """The start of the next local day (UTC)."""
    tomorrow = now.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(0), tzinfo=zone).astimezone(UTC)


def local_day_start(now: datetime, zone: ZoneInfo) -> datetime:
    """The start of `now`'s local day (UTC): daily limits count from here."""
    return datetime.combine(now.astimezone(zone).date(), time(0), tzinfo=zone).astimezone(UTC)


def next_local_hour(now: datetime, zone: ZoneInfo, hour: int) -> datetime:
    """The next moment (after `now`) the local clock shows `hour`:00 (UTC)."""
    local = now.astimezone(zone)
    candidate = datetime.combine(local.date(), time(hour), tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), time(hour), tzinfo=zone)
    return candidate.astimezone(UTC)
