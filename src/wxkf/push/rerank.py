"""The LLM's second opinion on a match, as JSON validated by a schema; an unreadable answer is "no match".

The model gets the intent, the profile and the rule-based explanation, and must answer exactly
`{"match": true|false, "score": 0..1, "reason": "一句中文"}` (`Verdict`). Anything else — prose,
broken JSON, a score out of range, a missing field — is not a match. (A system that scores an
unparseable answer 0.55 and calls it a match pushes noise to customers at night.)
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wxkf.agent.llm import LLMClient, LLMError, LLMUnavailableError

SYSTEM = (
    "你是资料匹配审核员。判断这位联系人是否符合客户的需求。只输出一个 JSON 对象，不要输出其他文字：\n"
    '{"match": true 或 false, "score": 0 到 1 之间的数字, "reason": "一句中文理由"}\n'
    "You review whether a contact fits a customer's request. Answer with one JSON object only."
)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    match: bool
    score: Annotated[float, Field(ge=0, le=1)]
    reason: Annotated[str, Field(min_length=1, max_length=300)]


def parse_verdict(text: str) -> Verdict | None:
    """The model's answer as a `Verdict`, or None when it is not exactly one."""
    body = _FENCE.sub("", text.strip())
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("score"), int) and not isinstance(data["score"], bool):
        data = {**data, "score": float(data["score"])}  # 1 and 0 are numbers too
    try:
        return Verdict.model_validate(data)
    except ValidationError:
        return None


def prompt(intent: dict[str, Any], profile: dict[str, Any], explanation: str) -> str:
    return json.dumps(
        {"客户需求 request": intent, "联系人 contact": profile, "规则匹配说明 rule explanation": explanation},
        ensure_ascii=False,
        default=str,
    )


async def review(
    llm: LLMClient, intent: dict[str, Any], profile: dict[str, Any], explanation: str
) -> Verdict | None:
    """Ask the model; None when its answer is unusable. An unreachable LLM raises (the job retries)."""
    try:
        completion = await llm.complete(
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt(intent, profile, explanation)},
            ]
        )
    except LLMUnavailableError:
        raise
    except LLMError:
        return None
    return parse_verdict(completion.content)
