"""A local OpenAI-compatible server for tests, development and the demo.

It speaks enough of the protocol for the real `openai` SDK: `POST /v1/chat/completions` (text, tool
calls, image content parts), `POST /v1/embeddings` (deterministic hashed vectors),
`POST /v1/audio/transcriptions` (multipart; WAV/MP3/FLAC/Ogg accepted, AMR refused as OpenAI does)
and `GET /v1/models`. Answers are
scripted in order; when the script is empty it echoes the last user message. Every request is
recorded (body and headers, with the Authorization header reduced to whether the key matched).

    with FakeOpenAI(api_key="sk-test") as fake:
        fake.reply("您好！")
        fake.tool_call("transfer_to_human", {"reason": "投诉"})
        fake.error(429)                 # retried by the SDK (Retry-After is 1 ms)
        fake.slow(5.0)                  # held until the client gives up
        fake.malformed()                # 200 with a body that is not JSON
        AsyncOpenAI(base_url=fake.base_url, api_key="sk-test")

It runs in its own thread (standard library only), so a held response never blocks the test's
event loop, and `stop()` releases held responses at once instead of waiting them out.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class ScriptedResponse:
    """One answer: an HTTP status, a body (JSON value or raw bytes), headers, and a delay."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    body: Any
    authorized: bool
    headers: dict[str, str]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of a chat completion request."""
        if isinstance(self.body, dict):
            return list(self.body.get("messages", []))
        return []

    @property
    def tools(self) -> list[dict[str, Any]]:
        if isinstance(self.body, dict):
            return list(self.body.get("tools", []))
        return []


EMBEDDING_DIMENSIONS = 64


class _Server(ThreadingHTTPServer):
    """Keeps its accepted connections, so that stopping closes those a client still holds open
    (HTTP/1.1 keep-alive from another process), instead of leaving them to the garbage collector."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


class FakeOpenAI:
    """A scripted OpenAI-compatible server on 127.0.0.1 (port 0 = a random free port)."""

    def __init__(self, *, api_key: str | None = "sk-test", model: str = "fake-model", port: int = 0) -> None:
        self.api_key = api_key  # None accepts any key
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._script: deque[ScriptedResponse] = deque()
        self._transcripts: deque[str] = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._ids = itertools.count(1)
        self._server = _Server(("127.0.0.1", port), _handler_for(self))
        self._thread: threading.Thread | None = None

    # Lifecycle ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        self._released.clear()
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # Scripting ----------------------------------------------------------------------------------

    def push(self, response: ScriptedResponse) -> None:
        with self._lock:
            self._script.append(response)

    def reply(self, text: str) -> None:
        """The next chat completion answers `text`."""
        self.push(ScriptedResponse(body=self._completion({"role": "assistant", "content": text}, "stop")))

    def tool_call(self, name: str, arguments: dict[str, Any] | str, *, content: str = "") -> None:
        """The next chat completion asks to call tool `name` (a str is sent verbatim, even if invalid)."""
        args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        message = {
            "role": "assistant",
            "content": content or None,
            "tool_calls": [
                {
                    "id": f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {"name": name, "arguments": args},
                }
            ],
        }
        self.push(ScriptedResponse(body=self._completion(message, "tool_calls")))

    def error(self, status: int, message: str = "", *, retry_after_ms: int = 1) -> None:
        """The next request fails with `status`; Retry-After keeps the SDK's retries fast."""
        text = message or {401: "Authentication Fails, Your api key is invalid"}.get(
            status, f"error {status}"
        )
        self.push(
            ScriptedResponse(
                status=status,
                body={"error": {"message": text, "type": "fake_error", "code": str(status)}},
                headers={"retry-after-ms": str(retry_after_ms)},
            )
        )

    def slow(self, seconds: float, then: ScriptedResponse | None = None) -> None:
        """Hold the next response for `seconds` (the client's timeout usually fires first)."""
        base = then or ScriptedResponse(
            body=self._completion({"role": "assistant", "content": "迟到的回答"}, "stop")
        )
        self.push(ScriptedResponse(base.status, base.body, base.raw, base.headers, seconds))

    def malformed(self, raw: bytes = b'{"id": "broken", "choices": [') -> None:
        """The next response is 200 application/json whose body is not JSON."""
        self.push(ScriptedResponse(raw=raw))

    def transcription(self, text: str) -> None:
        """The next /audio/transcriptions answers `text` (otherwise a fixed sentence)."""
        with self._lock:
            self._transcripts.append(text)

    def transcription_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/audio/transcriptions")]

    def _transcribe(self, body: Any) -> ScriptedResponse:
        """Like OpenAI's endpoint: a multipart `file` in a format it accepts (AMR is not one), `model`."""
        if not isinstance(body, dict) or "file" not in body or not body.get("model"):
            return ScriptedResponse(status=400, body={"error": {"message": "file and model are required"}})
        audio = body["file"]
        if not any(audio.startswith(magic) for magic in _AUDIO_MAGIC):
            return ScriptedResponse(
                status=400,
                body={"error": {"message": "Invalid file format. Supported formats: flac, mp3, ogg, wav"}},
            )
        with self._lock:
            text = self._transcripts.popleft() if self._transcripts else "（本地模拟转写）你好"
        return ScriptedResponse(body={"text": text})

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # Answers ------------------------------------------------------------------------------------

    def _completion(self, message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def _answer(self, method: str, path: str, body: Any) -> ScriptedResponse:
        if path.endswith("/models") and method == "GET":
            return ScriptedResponse(body={"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if path.endswith("/embeddings"):
            return ScriptedResponse(body=_embeddings(body, self.model))
        if path.endswith("/audio/transcriptions"):
            return self._transcribe(body)
        if not path.endswith("/chat/completions"):
            return ScriptedResponse(status=404, body={"error": {"message": f"no route {path}"}})
        with self._lock:
            if self._script:
                return self._script.popleft()
        return ScriptedResponse(body=self._completion({"role": "assistant", "content": _echo(body)}, "stop"))


# WAV, MP3 (ID3 tag or frame sync), FLAC, Ogg: what /audio/transcriptions accepts among the formats
# wxkf converts to.
_AUDIO_MAGIC = (b"RIFF", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"fLaC", b"OggS")


def _echo(body: Any) -> str:
    messages = body.get("messages", []) if isinstance(body, dict) else []
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last = users[-1] if users else ""
    if isinstance(last, list):  # content parts (vision): the text parts
        last = " ".join(
            str(p.get("text", "")) for p in last if isinstance(p, dict) and p.get("type") == "text"
        )
    return f"（本地模拟模型）您说的是：{last if isinstance(last, str) else ''}"


def _multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """A multipart/form-data body as {field: text, "file": bytes, "filename": name}."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        if part.get_filename():
            fields["file"], fields["filename"] = payload, part.get_filename()
        elif isinstance(name, str):
            fields[name] = payload.decode("utf-8", "replace")
    return fields


def _embeddings(body: Any, model: str) -> dict[str, Any]:
    """Stable vectors from hashed character bigrams: similar texts get similar vectors."""
    inputs = body.get("input", []) if isinstance(body, dict) else []
    texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs]
    data = []
    for index, text in enumerate(texts):
        vector = [0.0] * EMBEDDING_DIMENSIONS
        grams = [text[i : i + 2] for i in range(max(len(text) - 1, 1))]
        for gram in grams:
            digest = hashlib.blake2b(gram.encode(), digest_size=8).digest()
            vector[digest[0] % EMBEDDING_DIMENSIONS] += 1.0 if digest[1] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        data.append({"object": "embedding", "index": index, "embedding": [v / norm for v in vector]})
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 1, "total_tokens": 1}}


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests`
            return

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type", "")
            body: Any
            if content_type.startswith("multipart/form-data"):
                body = _multipart(content_type, raw)
            else:
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
            authorization = self.headers.get("Authorization", "")
            authorized = fake.api_key is None or authorization == f"Bearer {fake.api_key}"
            headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
            with fake._lock:
                fake.requests.append(RecordedRequest(method, self.path, body, authorized, headers))
            if not authorized:
                # The real services answer 401 before looking at the request; so does the fake.
                answer = ScriptedResponse(
                    status=401,
                    body={
                        "error": {"message": "Authentication Fails, Your api key is invalid", "type": "auth"}
                    },
                )
            else:
                answer = fake._answer(method, self.path, body)
            if answer.delay_seconds and fake._released.wait(answer.delay_seconds):
                return  # stopping: drop the held response
            payload = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout), which is what a slow answer tests

    return Handler
