"""A profile from free text — a colleague's description, a forwarded chat record — read by the LLM.

The model answers one JSON object with the profile's fields; it is validated as a `ProfileIn`
(typed fields, limits) and only returned, never saved: staff see it and confirm before it is
(`wxkf push profiles extract`, `POST /api/profiles/extract`). An answer that is not a valid
profile is an `ExtractionError` naming what was wrong.
"""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from wxkf.agent.llm import LLMClient
from wxkf.push.errors import ExtractionError, problems_of
from wxkf.push.models import ProfileIn

MAX_TEXT_CHARS = 8000
SYSTEM = (
    "你从员工提供的文字（人物简介或转发的聊天记录）中提取一位联系人的资料。只输出一个 JSON 对象，不要其他文字。"
    "字段：name（姓名，必填）、gender、age（整数）、city、company、position、industry、education、"
    "description（一两句概括）、tags（字符串数组，如技能、经历）、attributes（对象，其他有用信息，如 "
    '{"融资轮次": "A轮"}）。文字里没有的字段不要写，不要编造。\n'
    "Extract one contact's profile from the text as a single JSON object with the fields above; omit what "
    "the text does not say, never invent."
)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


async def extract_profile(llm: LLMClient, text: str) -> ProfileIn:
    cleaned = text.strip()
    if not cleaned:
        raise ExtractionError("没有可提取的文字 / there is no text to read a profile from")
    completion = await llm.complete(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": cleaned[:MAX_TEXT_CHARS]}]
    )
    try:
        data = json.loads(_FENCE.sub("", completion.content.strip()))
    except ValueError:
        raise ExtractionError(
            "模型的回答不是 JSON，未生成资料，请重试或手动填写 / the model did not answer JSON: no profile"
        ) from None
    if not isinstance(data, dict):
        raise ExtractionError("模型的回答不是一个 JSON 对象 / the model's answer is not a JSON object")
    data = {k: v for k, v in data.items() if v not in (None, "", [], {})}
    try:
        return ProfileIn.model_validate(data)
    except ValidationError as exc:
        raise ExtractionError(
            "模型提取的资料不完整或不合规 / the extracted profile is invalid: " + "; ".join(problems_of(exc))
        ) from None
