"""Injected faults: make a WeCom API (or callback delivery) fail, slow down or drop, at a rate.

WeCom cannot be asked to return 45009 or expire a token on demand; the simulator can. A fault
matches an API path as the client calls it (`kf/send_msg`, `gettoken`, …), `*` for every API, or
`callback` for callback deliveries.

Every matching fault applies, each on its own throw of the dice: a slow `kf/send_msg` and a 45009
on it at 10 % are both felt, the delays add up, and of the errcodes that fire the oldest fault's
wins. For callbacks, `drop` loses a delivery for good, `unreachable` fails one attempt as if the
receiver were down (WeCom then retries, wecom-api §1.7) and `duplicate` delivers a callback that
was answered 200 once more (WeCom does redeliver).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api: str = Field("*", description="API path after /cgi-bin/, '*' for all, or 'callback'")
    errcode: int | None = Field(
        None, description="errcode to answer instead of the real result (45009, 45033, -1, 42001…)"
    )
    delay_ms: int = Field(0, ge=0, le=60_000, description="slow response: wait this long first")
    invalidate_token: bool = Field(
        False, description="the caller's access_token is invalidated first (wecom-api §7.4): 42001"
    )
    drop: bool = Field(False, description="callback only: never deliver it")
    unreachable: bool = Field(
        False, description="callback only: this attempt fails as if the receiver were down"
    )
    duplicate: bool = Field(False, description="callback only: deliver it again after it was answered 200")
    rate: float = Field(1.0, ge=0.0, le=1.0, description="probability per call")
    times: int | None = Field(None, ge=1, description="fire at most this many times, then disappear")
    id: int = 0


@dataclass
class Effect:
    """What the faults that fired on one call or delivery attempt do to it, together."""

    delay_ms: int = 0
    errcode: int | None = None
    invalidate_token: bool = False
    drop: bool = False
    unreachable: bool = False
    duplicate: bool = False
    fired: list[int] = field(default_factory=list)

    @property
    def first(self) -> int | None:
        return self.fired[0] if self.fired else None


class FaultBook:
    """The active faults, in the order they were added."""

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

    def pick(self, api: str, rng: random.Random) -> Effect:
        """Throw the dice for every fault matching `api`; the combined effect of those that fire."""
        effect = Effect()
        for fault in list(self._faults):
            if fault.api != api and not (fault.api == "*" and api != "callback"):
                continue
            if fault.rate < 1.0 and rng.random() >= fault.rate:
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
            effect.fired.append(fault.id)
            effect.delay_ms += fault.delay_ms
            if effect.errcode is None:
                effect.errcode = fault.errcode
            effect.invalidate_token |= fault.invalidate_token
            effect.drop |= fault.drop
            effect.unreachable |= fault.unreachable
            effect.duplicate |= fault.duplicate
        return effect
