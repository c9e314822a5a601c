"""The terminal chat's HTTP side: the OpenAI chat API of a running server, streamed.

:class:`ChatClient` lists the chat models (``GET /v1/models``) and streams
``POST /v1/chat/completions`` as :class:`Piece`, :class:`Usage` and :class:`Finish` events.
Whatever goes wrong comes out as :class:`ChatError` with one line to show: the server's own
error message, or where the server could not be reached and how to start one.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

# A long prompt on a slow machine can take minutes before the first token: reads wait long,
# a connection to a server that is not there fails fast.
TIMEOUT = httpx.Timeout(600.0, connect=5.0)

START_HINT = "start one with `python -m locallab_cpp serve`, or run the chat with --embedded"


class ChatError(Exception):
    """Something the chat shows as one line (never a traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ModelInfo:
    """One entry of ``GET /v1/models``."""

    id: str
    kind: str
    context_length: int | None
    loaded: bool


@dataclass(frozen=True)
class Piece:
    """Streamed text: the answer (``text``) or the model's reasoning (``reasoning``)."""

    kind: Literal["text", "reasoning"]
    text: str


@dataclass(frozen=True)
class Usage:
    """The token counts of the stream's last chunk (``stream_options.include_usage``)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


@dataclass(frozen=True)
class Finish:
    """Why the answer ended: ``stop``, ``length``, ..."""

    reason: str


ChatEvent = Piece | Usage | Finish


def error_message(status: int, body: str) -> str:
    """One line for an error response: its JSON message (the OpenAI API's
    ``{"error": {"message"}}`` or the other APIs' ``{"detail"}``), else its status."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    message = _message_of(payload)
    if message is None:
        message = body.strip().splitlines()[0][:200] if body.strip() else "no details"
    return f"server error {status}: {message}"


def _message_of(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return " ".join(error["message"].split())
    if isinstance(error, str):
        return error
    detail = payload.get("detail")
    return " ".join(detail.split()) if isinstance(detail, str) else None


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` of each event of an SSE stream, given its lines (without line ends).

    As the standard says: an event's ``data:`` lines are joined with newlines, one space
    after the colon is dropped, comments and other fields are ignored, and an event ends
    at an empty line (an unfinished last one is dropped).
    """
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield "\n".join(data)
            data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))


def chat_events(lines: Iterable[str]) -> Iterator[ChatEvent]:
    """The events of a chat completion stream, given its SSE lines; ends at ``[DONE]``.

    An ``{"error": ...}`` event (a generation that failed after the stream began) raises
    :class:`ChatError` with its message.
    """
    for data in sse_data(lines):
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ChatError(f"the server sent a chunk that is not JSON: {data[:80]!r}") from None
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            raise ChatError(f"server error: {_message_of(chunk) or 'the generation failed'}")
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                yield Piece("reasoning", str(delta["reasoning_content"]))
            if delta.get("content"):
                yield Piece("text", str(delta["content"]))
            if choice.get("finish_reason"):
                yield Finish(str(choice["finish_reason"]))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details") or {}
            yield Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                cached_tokens=int(details.get("cached_tokens") or 0),
            )


class ChatClient:
    """The chat API of the server at ``base_url``; ``api_key`` is sent as a Bearer token.

    ``transport`` replaces httpx's network transport, ``http`` the whole client (tests: a
    fake transport, or an in-process app's test client).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _transport_error(self, exc: httpx.TransportError) -> ChatError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ChatError(f"no server answers at {self.base_url}: {START_HINT}.")
        if isinstance(exc, httpx.TimeoutException):
            return ChatError(f"the server at {self.base_url} did not answer in time.")
        return ChatError(f"the connection to {self.base_url} failed: {exc or type(exc).__name__}")

    def models(self) -> list[ModelInfo]:
        """The chat models the server offers (``meta.kind`` chat), in its order."""
        try:
            r = self._http.get("/v1/models")
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        if r.status_code >= 400:
            raise ChatError(error_message(r.status_code, r.text))
        try:
            entries = r.json()["data"]
        except (ValueError, KeyError, TypeError):
            raise ChatError(f"{self.base_url}/v1/models did not answer a model list.") from None
        found = []
        for entry in entries:
            meta = entry.get("meta") or {}
            kind = str(meta.get("kind") or "chat")
            if kind != "chat":
                continue
            context = entry.get("context_length")
            found.append(
                ModelInfo(
                    id=str(entry["id"]),
                    kind=kind,
                    context_length=context if isinstance(context, int) else None,
                    loaded=bool(entry.get("loaded", False)),
                )
            )
        return found

    def stream_chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str | None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Generator[ChatEvent, None, None]:
        """Stream one answer. Closing the generator (or an exception in the caller, Ctrl-C)
        closes the connection, which makes the server stop the generation and free its slot."""
        body: dict[str, Any] = {
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if model is not None:
            body["model"] = model
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code >= 400:
                    r.read()
                    raise ChatError(error_message(r.status_code, r.text))
                yield from chat_events(r.iter_lines())
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
