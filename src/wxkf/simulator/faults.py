"""Injected faults: make a WeCom API (or callback delivery) fail, slow down or drop, at a rate.

WeCom cannot be asked to return 45009 or expire a token on demand; the simulator can. A fault
matches an API path as the client calls it (`kf/send_msg`, `gettoken`, …), `*` for every API, or
`callback` for callback deliveries.
"""

from __future__ import annotations

import itertools
import random

from pydantic import BaseModel, ConfigDict, Field


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api: str = Field("*", description="API path after /cgi-bin/, '*' for all, or 'callback'")
    errcode: int | None = Field(
        None, description="errcode to answer instead of the real result (45009, 45033, -1, 42001…)"
    )
    delay_ms: int = Field(0, ge=0, le=60_000, description="slow response: wait this long first")
    drop: bool = Field(False, description="callback only: never deliver it")
    rate: float = Field(1.0, ge=0.0, le=1.0, description="probability per call")
    times: int | None = Field(None, ge=1, description="fire at most this many times, then disappear")
    id: int = 0


class FaultBook:
    """The active faults, first match wins."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, fault: Fault) -> Fault:
        stored = fault.model_copy(update={"id": next(self._ids)})
        self._faults.append(stored)
        return stored

    def clear(self) -> None:
        self._faults.clear()

    def list(self) -> list[Fault]:
        return list(self._faults)

    def pick(self, api: str, rng: random.Random) -> Fault | None:
        if not self._faults:
            return None
        for fault in self._faults:
            if fault.api != api and not (fault.api == "*" and api != "callback"):
                continue
            if fault.rate < 1.0 and rng.random() >= fault.rate:
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
            return fault
        return None
