"""The simulated clock: real time plus an offset, which tests and demos can advance or freeze.

Every time-based WeCom rule the simulator enforces reads this clock: access_token expiry (§7.4),
the 48 h send window (§4), 20 s welcome codes (§5), 10-minute callback tokens (§2) and the 3-day
sync horizon (§3). Time only moves forward, so ordered logs stay ordered.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class SimClock:
    """Unix time in seconds (float), `real time + offset`, optionally frozen."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._frozen_at: float | None = None

    def now(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at
        return time.time() + self._offset

    def utcnow(self) -> datetime:
        """The simulated time as an aware UTC datetime: wxkf's clock seam in tests and the demo."""
        return datetime.fromtimestamp(self.now(), UTC)

    def seconds(self) -> int:
        """Whole seconds, as WeCom timestamps (`send_time`, `CreateTime`) are."""
        return int(self.now())

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        if self._frozen_at is not None:
            self._frozen_at += seconds
        else:
            self._offset += seconds
        return self.now()

    def freeze(self) -> float:
        self._frozen_at = self.now()
        return self._frozen_at

    def unfreeze(self) -> float:
        if self._frozen_at is not None:
            self._offset = self._frozen_at - time.time()
            self._frozen_at = None
        return self.now()

    def state(self) -> dict[str, float | bool]:
        return {"now": self.now(), "offset": self.now() - time.time(), "frozen": self.frozen}
