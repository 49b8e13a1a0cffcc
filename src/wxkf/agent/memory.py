"""Memory: the conversation's recent turns (customer, bot, servicer), newest kept, within a token budget.

Where the turns come from is a `MemorySource`; `PipelineMemory` reads the pipeline's ledgers (customer
and servicer messages from `kf_inbound`, what we sent from `kf_outbox`). Token counts are estimates —
a CJK character is about one token and Latin text about four characters per token — which is close
enough for DeepSeek's and OpenAI's tokenizers to keep the prompt well inside the context window.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from psycopg.rows import dict_row

from wxkf.db.engine import Database
from wxkf.kf.inbound import render_text
from wxkf.kf.responder import Conversation

# CJK ideographs, kana, hangul and fullwidth punctuation: each is roughly one token.
_WIDE_RE = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
TURN_OVERHEAD_TOKENS = 4  # role and separators per chat message


def estimate_tokens(value: str) -> int:
    wide = len(_WIDE_RE.findall(value))
    return wide + math.ceil((len(value) - wide) / 4)


class Speaker(StrEnum):
    CUSTOMER = "customer"
    BOT = "bot"
    SERVICER = "servicer"


@dataclass(frozen=True)
class Turn:
    speaker: Speaker
    text: str
    at: datetime
    msgid: str | None = None
    servicer_userid: str | None = None

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.text) + TURN_OVERHEAD_TOKENS


class MemorySource(Protocol):
    async def recent_turns(self, conversation: Conversation, *, limit: int) -> list[Turn]:
        """Up to `limit` most recent turns, oldest first."""
        ...


def fit_to_budget(turns: Sequence[Turn], budget_tokens: int) -> list[Turn]:
    """The newest turns whose total fits `budget_tokens`, oldest first.

    Turns are kept contiguous (no gaps in the middle of a conversation). When even the newest turn is
    too long, its beginning is kept, cut to the budget, so the model still sees what was said last.
    """
    kept: list[Turn] = []
    used = 0
    for turn in reversed(turns):
        if used + turn.tokens <= budget_tokens:
            kept.append(turn)
            used += turn.tokens
            continue
        if not kept:
            cut = _cut_to_tokens(turn.text, budget_tokens - TURN_OVERHEAD_TOKENS - 1)
            if cut:
                kept.append(Turn(turn.speaker, cut + "…", turn.at, turn.msgid, turn.servicer_userid))
        break
    kept.reverse()
    return kept


def _cut_to_tokens(value: str, budget: int) -> str:
    if budget <= 0:
        return ""
    lo, hi = 0, len(value)
    while lo < hi:  # the longest prefix within budget
        mid = (lo + hi + 1) // 2
        if estimate_tokens(value[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return value[:lo]


class ConversationMemory:
    """Recall a conversation's recent turns within a token budget."""

    def __init__(self, source: MemorySource, *, budget_tokens: int = 1500, fetch_limit: int = 40) -> None:
        self.source = source
        self.budget_tokens = budget_tokens
        self.fetch_limit = fetch_limit

    async def recall(self, conversation: Conversation, *, exclude_msgids: Collection[str] = ()) -> list[Turn]:
        """The turns before the messages being answered now (those are excluded by msgid)."""
        turns = await self.source.recent_turns(conversation, limit=self.fetch_limit)
        earlier = [t for t in turns if t.msgid is None or t.msgid not in exclude_msgids]
        return fit_to_budget(earlier, self.budget_tokens)


def _body_text(msgtype: str, body: Any) -> str:
    """Inbound rows keep the sync_msg item (body under the msgtype key, wecom-api §3); outbox rows keep
    the send_msg body, which has the same shape (wecom-api §4)."""
    if isinstance(body, dict) and isinstance(body.get(msgtype), dict):
        return render_text(msgtype, body[msgtype])
    return render_text(msgtype, body if isinstance(body, dict) else {})


# wecom-api §3: origin 3 = the customer, 5 = a servicer on the WeCom client; 4 (events) are no turns.
_RECENT_TURNS = """
SELECT * FROM (
    SELECT CASE WHEN origin = 5 THEN 'servicer' ELSE 'customer' END AS speaker,
           msgtype, body, send_time AS at, msgid, servicer_userid
      FROM kf_inbound
     WHERE open_kfid = %(open_kfid)s AND external_userid = %(external_userid)s AND origin IN (3, 5)
    UNION ALL
    SELECT 'bot', msgtype, body, coalesce(sent_at, created_at), msgid, NULL
      FROM kf_outbox
     WHERE open_kfid = %(open_kfid)s AND external_userid = %(external_userid)s AND status = 'sent'
     ORDER BY at DESC
     LIMIT %(limit)s
) recent ORDER BY at
"""


class PipelineMemory:
    """A `MemorySource` over the pipeline's ledgers: what the customer and servicers wrote, what we sent."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def recent_turns(self, conversation: Conversation, *, limit: int) -> list[Turn]:
        async with self.database.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                _RECENT_TURNS,
                {
                    "open_kfid": conversation.open_kfid,
                    "external_userid": conversation.external_userid,
                    "limit": limit,
                },
            )
            rows = await cur.fetchall()
        return [
            Turn(
                speaker=Speaker(row["speaker"]),
                text=_body_text(row["msgtype"], row["body"]),
                at=row["at"],
                msgid=row["msgid"],
                servicer_userid=row["servicer_userid"],
            )
            for row in rows
        ]
