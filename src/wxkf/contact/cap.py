"""The receive cap as a calendar rule (wecom-api §9): N messages per natural day, week or month.

WeCom counts per customer, corp-wide, in natural periods (自然日/周/月) in China time. "当月天数"
(the current default rule) is expressed as count 0 with period month.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Period = Literal["day", "week", "month"]

_PERIOD_ZH = {"day": "每天", "week": "每周", "month": "每月"}
_PERIOD_EN = {"day": "day", "week": "week", "month": "month"}


@dataclass(frozen=True)
class ReceiveCap:
    period: Period
    count: int  # 0 with period "month" means the number of days in that month
    timezone: str = "Asia/Shanghai"

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The natural period containing `now`, as aware datetimes [start, end)."""
        local = now.astimezone(ZoneInfo(self.timezone))
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == "day":
            start = day
            end = _local_midnight(start.date() + timedelta(days=1), self.timezone)
        elif self.period == "week":
            start = _local_midnight(day.date() - timedelta(days=day.weekday()), self.timezone)
            end = _local_midnight(start.date() + timedelta(days=7), self.timezone)
        else:
            start = _local_midnight(day.date().replace(day=1), self.timezone)
            nxt = (start.date().replace(day=28) + timedelta(days=4)).replace(day=1)
            end = _local_midnight(nxt, self.timezone)
        return start, end

    def limit(self, now: datetime) -> int:
        if self.count:
            return self.count
        local = now.astimezone(ZoneInfo(self.timezone))
        return calendar.monthrange(local.year, local.month)[1]

    def describe(self) -> str:
        count_zh = f"{self.count} 条" if self.count else "当月天数条"
        count_en = str(self.count) if self.count else "days-in-month"
        return f"{_PERIOD_ZH[self.period]}最多 {count_zh} / {count_en} per {_PERIOD_EN[self.period]}"


def _local_midnight(day: date, timezone: str) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone))
