"""What the customer sent, read for the responders: text to search, text to show the model, images
for a vision model, and honest words for what cannot be read.

    reader = ContentReader(Transcriber.from_settings(settings), vision=settings.vision_configured)
    content = await reader.read(request.messages)
    content.query     # only what the customer wrote or said: searched in the knowledge base
    content.prompt    # every message rendered (a location's name and coordinates, a link's title and
                      # URL, a chat history's items, a voice note's transcript)
    content.images    # images for a vision-capable model (OpenAI content parts)
    content.replies   # short, honest lines: "我暂时无法查看图片，请用文字描述一下问题。"

A label such as 「图片」 is never part of `query`: matched against the knowledge base it finds the
entry that happens to talk about pictures. Voice goes to speech-to-text when STT_BASE_URL is set
(AMR converted with PyAV first); its transcript is then a question like any other.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

from wxkf.agent.audio import CONTENT_TYPES, AudioConversionError, AudioFormat, convert_voice
from wxkf.config import Settings
from wxkf.kf.inbound import MEDIA_LABELS, render_text, searchable_text
from wxkf.kf.responder import InboundMessage, MediaContent

log = logging.getLogger(__name__)

IMAGE_UNSEEN = "我暂时无法查看图片，请用文字描述一下问题。"
VOICE_UNHEARD = "我暂时无法收听语音，请用文字描述一下问题。"
VIDEO_UNSEEN = "我暂时无法观看视频，请用文字描述一下问题。"
FILE_UNREAD = "收到您的文件{name}，我暂时无法查看文件内容，请用文字说明一下需要什么帮助。"
MEDIA_LOST = "抱歉，您发送的{label}没有接收成功，请重新发送，或用文字描述一下问题。"
SHARED = "收到您发送的{what}。请问有什么可以帮您？"

_SHORT_LABELS = {"image": "图片", "voice": "语音", "video": "视频", "file": "文件"}
_SHARED_LABELS = {
    "location": "位置",
    "link": "链接",
    "miniprogram": "小程序",
    "business_card": "名片",
    "channels_shop_product": "视频号商品",
    "channels_shop_order": "视频号订单",
    "channels": "视频号内容",
    "merged_msg": "聊天记录",
}


class TranscriptionError(Exception):
    """Speech-to-text gave no text; the message says why."""


class Transcriber:
    """An OpenAI-compatible `/audio/transcriptions` endpoint, fed WAV/MP3/FLAC converted from AMR."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        audio_format: AudioFormat = "wav",
        language: str = "",
        timeout_seconds: float = 30.0,
    ) -> None:
        self.model = model
        self.audio_format = audio_format
        self.language = language
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_seconds, max_retries=2)

    @classmethod
    def from_settings(cls, settings: Settings) -> Transcriber | None:
        if not settings.stt_base_url:
            return None
        key = settings.stt_api_key or settings.llm_key
        return cls(
            base_url=settings.stt_base_url,
            api_key=key.get_secret_value() if key else "none",
            model=settings.stt_model,
            audio_format=settings.stt_format,
            language=settings.stt_language,
            timeout_seconds=settings.stt_timeout_seconds,
        )

    async def transcribe(self, voice: bytes) -> str:
        try:
            audio = convert_voice(voice, self.audio_format)
        except AudioConversionError as exc:
            raise TranscriptionError(str(exc)) from exc
        extra: dict[str, Any] = {"language": self.language} if self.language else {}
        try:
            result = await self._client.audio.transcriptions.create(
                model=self.model,
                file=(f"voice.{self.audio_format}", audio, CONTENT_TYPES[self.audio_format]),
                **extra,
            )
        except openai.APIError as exc:
            raise TranscriptionError(
                f"语音转文字失败，请检查 STT_BASE_URL / STT_MODEL / speech-to-text failed: {type(exc).__name__}"
            ) from exc
        text = str(getattr(result, "text", "") or "").strip()
        if not text:
            raise TranscriptionError("语音转文字没有结果 / the transcription is empty")
        return text

    async def aclose(self) -> None:
        await self._client.close()


@dataclass
class ReadContent:
    query: str = ""
    prompt: str = ""
    images: list[MediaContent] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    acknowledgements: list[str] = field(default_factory=list)
    transcripts: dict[str, str] = field(default_factory=dict)

    @property
    def answerable(self) -> bool:
        """Something besides the honest lines to answer: text, a transcript, an image seen, a location …"""
        return bool(self.query or self.images or self.acknowledgements)


def image_part(media: MediaContent) -> dict[str, Any]:
    """An OpenAI content part carrying the image itself (a data URL)."""
    data = base64.b64encode(media.data or b"").decode()
    content_type = media.content_type if media.content_type.startswith("image/") else "image/jpeg"
    return {"type": "image_url", "image_url": {"url": f"data:{content_type};base64,{data}"}}


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


class ContentReader:
    def __init__(self, transcriber: Transcriber | None = None, *, vision: bool = False) -> None:
        self.transcriber = transcriber
        self.vision = vision

    async def read(self, messages: Sequence[InboundMessage]) -> ReadContent:
        content = ReadContent()
        query: list[str] = []
        prompt: list[str] = []
        for message in messages:
            text = searchable_text(message.msgtype, message.content)
            shown = message.text
            media = message.media
            if message.msgtype in MEDIA_LABELS:
                label = _SHORT_LABELS[message.msgtype]
                if media is None or media.status != "stored":
                    content.replies.append(MEDIA_LOST.format(label=label))
                elif message.msgtype == "image" and self.vision and media.data:
                    content.images.append(media)
                elif message.msgtype == "voice" and self.transcriber is not None and media.data:
                    try:
                        text = await self.transcriber.transcribe(media.data)
                    except TranscriptionError as exc:
                        log.warning("语音转文字失败 / transcription failed: %s", exc)
                        content.replies.append(VOICE_UNHEARD)
                    else:
                        content.transcripts[message.msgid] = text
                        shown = render_text("voice", {"transcript": text})
                elif message.msgtype == "image":
                    content.replies.append(IMAGE_UNSEEN)
                elif message.msgtype == "voice":
                    content.replies.append(VOICE_UNHEARD)
                elif message.msgtype == "video":
                    content.replies.append(VIDEO_UNSEEN)
                else:
                    name = f"「{media.filename}」" if media.filename else ""
                    content.replies.append(FILE_UNREAD.format(name=name))
            elif message.msgtype != "text" and not text:
                content.acknowledgements.append(
                    SHARED.format(what=_SHARED_LABELS.get(message.msgtype, "消息"))
                )
            if text.strip():
                query.append(text.strip())
            if shown.strip():
                prompt.append(shown.strip())
        content.query = "\n".join(query)
        content.prompt = "\n".join(prompt)
        content.replies = _unique(content.replies)
        content.acknowledgements = _unique(content.acknowledgements)
        return content

    async def aclose(self) -> None:
        if self.transcriber is not None:
            await self.transcriber.aclose()
