"""The statuses and modes push accepts, as plain Literal types: the models, the API's query
parameters and the CLI's choices read them here, so each list is written once, and the CLI can
import them at start-up without pydantic."""

from __future__ import annotations

from typing import Literal

IntentStatus = Literal["draft", "active", "paused", "cancelled"]
MatchStatus = Literal["pending", "scheduled", "pushed", "dropped", "rejected", "retired"]
HistoryStatus = Literal["scheduled", "sent", "dropped", "skipped"]
PushMode = Literal["instant", "digest"]
