"""WeCom-shaped errors: the errcode a rule produces and the errmsg text WeCom would send (§7.3)."""

from __future__ import annotations

import itertools
import secrets
from typing import Any

# English errmsg texts. Where a real response was captured (§7.3, ISSUE-LB) the text is WeCom's own;
# the rest follow the same terse style, named after the official description in the errcode table.
ERRMSG: dict[int, str] = {
    -1: "system busy",
    40001: "invalid credential",
    40003: "invalid userid",
    40004: "invalid media type",
    40006: "invalid file size",
    40007: "invalid media_id",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40056: "invalid agentid",
    40058: "invalid param",
    40096: "invalid external userid",
    41001: "access_token missing",
    41046: "missing msgid",
    41047: "invalid msgid",
    41048: "no customer to send",
    41064: "attachments count exceed limit",
    41093: "group msg task has been cancelled",
    41094: "remind group msg send freq out of limit",
    42001: "access_token expired",
    44001: "empty media data",
    45002: "content size out of limit",
    45009: "api freq out of limit",
    45033: "api concurrent out of limit",
    48001: "api unauthorized",
    48002: "api forbidden",
    60111: "userid not found",
    81013: "user & party & tag all invalid",
    84061: "not external contact",
    95000: "invalid open_kfid",
    95001: "send msg count limit",
    95002: "send msg time limit",
    95004: "open_kfid not exist",
    95007: "invalid msg token",
    95008: "msgmenu item count exceed limit",
    95009: "invalid msgmenu item type",
    95013: "session has been closed",
    95014: "user is not a servicer",
    95016: "service state transition not allowed",
    95018: "send msg session status invalid",
    95019: "servicer has stopped serving",
    95021: "upgrade service userid or chat_id not configured",
}

_hint_counter = itertools.count(1)


class SimError(Exception):
    """A WeCom rule refused the call. `detail` is appended to the English text (e.g. the param)."""

    def __init__(self, errcode: int, detail: str = "") -> None:
        self.errcode = errcode
        self.detail = detail
        super().__init__(f"{errcode} {errmsg_text(errcode, detail)}")


def errmsg_text(errcode: int, detail: str = "") -> str:
    text = ERRMSG.get(errcode, "error")
    return f"{text} {detail}".strip() if detail else text


def errmsg(errcode: int, detail: str, *, now: float, client_ip: str) -> str:
    """§7.3: `<text>, hint: [<id>], from ip: <ip>, more info at …?e=<errcode>`."""
    hint = f"{int(now)}_{next(_hint_counter)}_{secrets.token_hex(16)}"
    return (
        f"{errmsg_text(errcode, detail)}, hint: [{hint}], from ip: {client_ip}, "
        f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
    )


def error_body(errcode: int, detail: str, *, now: float, client_ip: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": errmsg(errcode, detail, now=now, client_ip=client_ip)}
