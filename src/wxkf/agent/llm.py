"""The LLM behind the agent: any OpenAI-compatible chat endpoint, through the `openai` SDK.

DeepSeek is the default endpoint (`LLM_BASE_URL`); the key is `LLM_API_KEY` or `DEEPSEEK_API_KEY`.
The SDK retries 429, 5xx, timeouts and connection errors itself, a bounded number of times
(`LLM_MAX_RETRIES`, exponential backoff, honouring `Retry-After`); what still fails becomes one of:

    LLMError                    the LLM gave no usable answer; `kind` and `status_code` say why
    ├── LLMAuthError                401/403: the key is wrong, expired, or the account is not usable
    ├── LLMUnavailableError         429 / 5xx / timeout / connection, still failing after the retries
    ├── LLMRequestError             400/404/422: the endpoint refused the request (often LLM_MODEL)
    └── LLMResponseError            the endpoint answered 200 with something that is not a completion

Messages are Chinese first with English beside them, and never contain the key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import SecretStr

from wxkf.config import Settings


class LLMError(Exception):
    """The LLM gave no usable answer."""

    kind = "error"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class LLMAuthError(LLMError):
    kind = "auth"


class LLMUnavailableError(LLMError):
    """Rate limited, server error, timeout or connection failure, after the bounded retries."""

    def __init__(self, message: str, *, kind: str, status_code: int | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.kind = kind


class LLMRequestError(LLMError):
    kind = "bad_request"


class LLMResponseError(LLMError):
    kind = "malformed"


# docs/troubleshooting.md#llm-auth-401: the three steps, in its order.
AUTH_ERROR_MESSAGE = (
    "大模型认证失败（HTTP {status}）：请检查 .env 中的 LLM_API_KEY 或 DEEPSEEK_API_KEY，"
    "确认 API Key 有效且未过期，并登录 DeepSeek（或所用服务商）官网确认账户状态（余额、是否停用）/ "
    "LLM authentication failed: check LLM_API_KEY or DEEPSEEK_API_KEY in .env, make sure the key is valid "
    "and not expired, and check the account status on the provider's site"
)


@dataclass(frozen=True)
class ToolCallRequest:
    """The model asked to call `name` with `arguments` (a JSON text, possibly invalid)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    """One assistant turn: text, tool calls, or both."""

    content: str
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    finish_reason: str = ""

    def as_message(self) -> ChatCompletionMessageParam:
        """The assistant message to put back into the conversation before the tool results."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message  # type: ignore[return-value]


class LLMClient:
    """A chat model at an OpenAI-compatible endpoint. Close it with `aclose()`."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr,
        model: str,
        timeout_seconds: float = 30.0,
        max_retries: int = 2,
        max_tokens: int = 1024,
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self._secret = api_key.get_secret_value()
        self._client = AsyncOpenAI(
            api_key=self._secret, base_url=base_url, timeout=timeout_seconds, max_retries=max_retries
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMClient | None:
        """The configured LLM, or None when no key is set (the offline responder answers then)."""
        key = settings.llm_key
        if key is None or not key.get_secret_value():
            return None
        return cls(
            base_url=settings.llm_base_url,
            api_key=key,
            model=settings.llm_model,
            timeout_seconds=settings.llm_timeout_seconds,
            max_retries=settings.llm_max_retries,
            max_tokens=settings.llm_max_tokens,
        )

    @classmethod
    def vision_from_settings(cls, settings: Settings) -> LLMClient | None:
        """The vision-capable model (LLM_VISION_MODEL), or None when none is configured."""
        key = settings.vision_key
        if not settings.vision_configured or key is None:
            return None
        return cls(
            base_url=settings.llm_vision_base_url or settings.llm_base_url,
            api_key=key,
            model=settings.llm_vision_model,
            timeout_seconds=settings.llm_timeout_seconds,
            max_retries=settings.llm_max_retries,
            max_tokens=settings.llm_max_tokens,
        )

    async def complete(
        self,
        messages: Sequence[ChatCompletionMessageParam],
        *,
        tools: Sequence[ChatCompletionToolParam] = (),
        allow_tools: bool = True,
    ) -> Completion:
        """Ask for the next assistant turn. Raises an `LLMError` subclass when there is none."""
        extra: dict[str, Any] = {}
        if tools:
            extra["tools"] = list(tools)
            extra["tool_choice"] = "auto" if allow_tools else "none"
        try:
            response = await self._client.chat.completions.create(
                model=self.model, messages=list(messages), max_tokens=self.max_tokens, **extra
            )
        except openai.APIError as exc:
            raise self._translate(exc) from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LLMResponseError(
                f"大模型返回的内容不是有效的 JSON / the LLM endpoint returned invalid JSON: {exc}"
            ) from exc
        return _read_completion(response)

    async def aclose(self) -> None:
        await self._client.close()

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _translate(self, exc: openai.APIError) -> LLMError:
        """The one place where SDK errors become wxkf's."""
        detail = self._redact(str(exc))[:300]
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status in (401, 403):
                return LLMAuthError(AUTH_ERROR_MESSAGE.format(status=status), status_code=status)
            if status == 429:
                return LLMUnavailableError(
                    f"大模型限流（HTTP 429），重试后仍失败 / rate limited after retries: {detail}",
                    kind="rate_limited",
                    status_code=status,
                )
            if status >= 500:
                return LLMUnavailableError(
                    f"大模型服务出错（HTTP {status}），重试后仍失败 / server error after retries: {detail}",
                    kind="server",
                    status_code=status,
                )
            return LLMRequestError(
                f"大模型拒绝了请求（HTTP {status}），请检查 LLM_MODEL={self.model} 与 LLM_BASE_URL / "
                f"the endpoint refused the request; check LLM_MODEL and LLM_BASE_URL: {detail}",
                status_code=status,
            )
        if isinstance(exc, openai.APITimeoutError):
            return LLMUnavailableError(
                "大模型响应超时，重试后仍失败（可调大 LLM_TIMEOUT_SECONDS）/ "
                "the LLM timed out after retries (LLM_TIMEOUT_SECONDS)",
                kind="timeout",
            )
        if isinstance(exc, openai.APIConnectionError):
            return LLMUnavailableError(
                f"无法连接大模型服务，请检查 LLM_BASE_URL 与网络 / cannot reach the LLM endpoint: {detail}",
                kind="connection",
            )
        return LLMResponseError(
            f"大模型返回了无法识别的响应 / the LLM endpoint returned an unreadable response: {detail}"
        )


def _read_completion(response: object) -> Completion:
    """Check the shape: the SDK builds models without validating, so a wrong body gets this far."""
    if not isinstance(response, ChatCompletion) or not response.choices:
        raise LLMResponseError(
            "大模型返回的不是对话补全结果（缺少 choices）/ the response is not a chat completion (no choices)"
        )
    choice = response.choices[0]
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None)
    raw_calls = getattr(message, "tool_calls", None) or []
    if message is None or not isinstance(content, str | None) or not isinstance(raw_calls, list):
        raise LLMResponseError("大模型返回的消息格式不正确 / the completion's message is malformed")
    calls: list[ToolCallRequest] = []
    for raw in raw_calls:
        function = getattr(raw, "function", None)
        name = getattr(function, "name", None)
        if not isinstance(name, str) or not name:
            raise LLMResponseError("大模型的工具调用缺少名称 / a tool call has no function name")
        arguments = getattr(function, "arguments", None)
        calls.append(
            ToolCallRequest(
                id=str(getattr(raw, "id", "") or f"call_{len(calls)}"),
                name=name,
                arguments=arguments if isinstance(arguments, str) else "{}",
            )
        )
    return Completion(content=content or "", tool_calls=calls, finish_reason=str(choice.finish_reason or ""))
