"""What the agent says to the model, and the fixed texts it says to customers.

The system prompt holds the persona (`LLM_PERSONA`), the rules (answer only from the passages, say so
honestly when they do not cover the question, hand over to a person), the retrieved passages with
their sources, and the message budget WeCom leaves for this reply (wecom-api §4: at most 5 messages
of at most 2048 bytes each, per customer message).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath
from typing import Protocol

DEFAULT_PERSONA = "你是本店的微信客服助手，语气亲切、专业、简洁，用中文回答（客户用其他语言时用客户的语言）。"

# wecom-api §4: one text message is at most 2048 bytes; a Chinese character is 3 bytes in UTF-8,
# and the pipeline splits at sentence ends, so promise a little less than 2048 / 3.
CJK_CHARS_PER_MESSAGE = 600

# What customers are told (Chinese first, English beside).
HANDOFF_TEXT = (
    "这个问题我暂时无法确定答案，我会转给同事为您处理。\n"
    "I'm not sure about this one, so I'll pass it to a colleague who will get back to you."
)

# The knowledge base is silent (KF_UNKNOWN_ANSWER=say or an account's kb_silent=say, or no servicer can receive): say so, and
# say how to reach a person.
UNKNOWN_TEXT = (
    "这个问题我暂时没有找到确切的答案。您可以换个说法再问我一次；需要人工客服的话，请回复「人工」。\n"
    "I couldn't find an answer to that. Try asking another way, or reply 人工 for a colleague."
)
# A customer asked for a person, and no servicer can receive now.
NO_HUMAN_TEXT = (
    "现在没有人工客服在线，我先继续为您服务：您可以直接问我，也可以稍后再找人工客服。\n"
    "No colleague is available right now; ask me anything, or try a colleague again later."
)
# What the model answers, alone, when the passages do not cover a factual question: the responder
# then says it does not know (KF_UNKNOWN_ANSWER), whatever the model would have made up.
UNKNOWN_MARKER = "NO_ANSWER"

GREETING_TEXT = "您好！我是智能客服，请问有什么可以帮您？\nHello! How can I help you?"
TRANSFER_TEXT = "好的，这就为您转接人工客服。\nSure, I'm passing you to a colleague."
# A thanks, an ok or a goodbye on its own: acknowledged, never searched for or handed to a person.
THANKS_TEXT = "不客气，还有其他问题随时问我。\nYou're welcome; ask me anytime."
ACK_TEXT = "好的，还有其他问题随时找我。\nAll right; I'm here if anything else comes up."

# What the offline responder recognises without the knowledge base: small talk (a greeting, a thanks,
# an ok or a goodbye, alone or together) and a request for a person. Anything else is a question for
# the knowledge base.
_GREETINGS = "你好|您好|hello|hi|嗨|哈喽|在吗|在不在|有人吗|早上好|下午好|晚上好"
_THANKS = "谢谢你|谢谢您|谢谢|谢啦|多谢|非常感谢|太感谢了|感谢你|感谢您|感谢|thank you|thanks|thx"
_OKS = "好的|好滴|好嘞|好|嗯嗯|嗯|哦|噢|okay|ok|行|收到|明白了|明白|知道了|了解|懂了|没问题|没有了|没事了|再见|拜拜|bye|👌|👍"
_FILLER = r"[\s啊呀吗呢哈啦了哦噢～~!！。.,，、？?]*"


def _only(words: str) -> re.Pattern[str]:
    """A message made of these words and nothing else (punctuation and particles aside)."""
    return re.compile(rf"^{_FILLER}(?:(?:{words}){_FILLER})+$", re.IGNORECASE)


GREETING_RE = _only(_GREETINGS)
SMALL_TALK_RE = _only(f"{_GREETINGS}|{_THANKS}|{_OKS}")
_THANKS_RE = re.compile(_THANKS, re.IGNORECASE)
# 「人工」 alone is what UNKNOWN_TEXT asks the customer to reply; inside a longer message (人工智能,
# 人工费) it is not a request.
ASK_HUMAN_RE = re.compile(
    rf"转人工|人工客服|找人工|要人工|接人工|人工服务|人工坐席|真人|^{_FILLER}人工{_FILLER}$|human agent|real person",
    re.IGNORECASE,
)


def small_talk(text: str) -> str | None:
    """The fixed reply to a message that is only small talk, or None when it asks something."""
    if not SMALL_TALK_RE.match(text):
        return None
    if _THANKS_RE.search(text):
        return THANKS_TEXT
    return GREETING_TEXT if GREETING_RE.match(text) else ACK_TEXT


class PassageLike(Protocol):
    """A retrieved knowledge-base passage (`wxkf.agent.kb` returns these)."""

    @property
    def text(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def heading(self) -> str: ...

    @property
    def score(self) -> float: ...

    @property
    def relevant(self) -> bool: ...


def cite(passage: PassageLike) -> str:
    """`source · heading`, the way a source is shown to staff (the ledger, the console) and the model."""
    return f"{passage.source} · {passage.heading}" if passage.heading else passage.source


def customer_cite(passage: PassageLike) -> str:
    """What a customer may read as a passage's source: its heading path (`小鹿咖啡 常见问题 › 营业时间`).

    Never the source itself: on the CLI that is the server's absolute file path. A document without
    headings is named by its file name's stem; a PDF's headings are page numbers, so its name leads.
    """
    name = PurePath(passage.source.replace("\\", "/")).stem
    headings = [h.strip() for h in passage.heading.split(" > ") if h.strip()]
    if not headings or passage.source.lower().endswith(".pdf"):
        headings.insert(0, name)
    return " › ".join(h for h in headings if h)


def budget_rule(remaining_messages: int, max_text_bytes: int) -> str:
    chars = max(1, max_text_bytes * CJK_CHARS_PER_MESSAGE // 2048)
    return (
        f"本次最多可以发送 {remaining_messages} 条消息，每条不超过 {max_text_bytes} 字节（约 {chars} 个汉字）。"
        f"整个回答必须在 {remaining_messages * chars} 个汉字以内，尽量一条说完；不要用 Markdown 表格或标题，"
        "微信里显示为纯文本。"
    )


def system_prompt(
    *,
    persona: str,
    passages: Sequence[PassageLike],
    remaining_messages: int,
    max_text_bytes: int,
    can_transfer: bool,
    instructions: str = "",
) -> str:
    handover = (
        "调用 transfer_to_human 工具转人工，并告诉客户会有同事跟进"
        if can_transfer
        else "告诉客户会把问题转给同事"
    )
    lines = [
        (persona.strip() or DEFAULT_PERSONA),
        "",
        "规则：",
        "1. 只根据下面「资料」回答事实性问题（价格、政策、时效、规格、流程等），不要编造资料里没有的信息，"
        "也不要用常识补全资料没写的细节。",
        f"2. 资料没有覆盖客户的事实性问题时，只回复 {UNKNOWN_MARKER} 这个词，不要加别的内容。"
        "寒暄、感谢等无需资料，礼貌回应即可。",
        f"3. 客户要求人工、投诉或情绪激动时，{handover}。",
        "4. 引用资料时，可在句末用括号注明资料的「标题」，不要写文件名或路径。",
        f"5. {budget_rule(remaining_messages, max_text_bytes)}",
        *([f"6. {instructions.strip()}"] if instructions.strip() else []),
        "",
    ]
    relevant = [p for p in passages if p.relevant]
    if relevant:
        lines.append(
            f"检索结论：知识库中有 {len(relevant)} 段相关资料（标为「相关」）；「弱相关」的只作参考。"
        )
        lines.append("资料：")
        for index, passage in enumerate(passages, 1):
            label = "相关" if passage.relevant else "弱相关"
            lines.append(
                f"[{index}]（{label}）来源：{cite(passage)}；标题：{customer_cite(passage)}\n{passage.text.strip()}"
            )
    else:
        lines.append(
            f"检索结论：知识库中没有与客户问题相关的资料。资料：（无）。事实性问题只回复 {UNKNOWN_MARKER}。"
        )
    return "\n".join(lines)


def offline_answer(passage: PassageLike) -> str:
    """The offline responder's answer: the passage itself, with the title it comes from (`customer_cite`)."""
    title = customer_cite(passage)
    return f"{passage.text.strip()}\n（来源：{title}）" if title else passage.text.strip()
