"""A test's models, lent to an app that runs in another process.

The grader may serve a learner's app in a process of its own, apart from the tests. A
test that must hold a model the app uses (a gate it opens token by token, a recorder
of the calls, a model that fails mid-answer) keeps that model in its own process and
lends it: `coursekit.model_lending.lend(model)` serves the model on loopback, and the
app reaches it through a `LinkedLM` (or a `LinkedEmbedder`), which its model dependency
answers: step 08's `linked_model()`, step 10's `linked_registry()`. What the test checks
on the model (its gate, its calls, why its stream stopped) stays true: the model runs
where the test runs.

The channel is narrow: one call per connection, one JSON line each way per item.
  app -> lender: {"key", "call", ...the call's arguments}, where "call" is
    "stream_chat" (messages [{role, content}], max_tokens, seed, temperature),
    "complete" or "stream_complete" (messages in OpenAI's shape, tools, max_tokens,
    seed, temperature, stop), or "embed" (texts)
  lender -> app: {"item": ...} per token or delta, then {"end": true}; {"result": ...}
    for a call that is not a stream; or {"error": {"type": "OSError", "message": "..."}}
The app's side is the submission's code, so the lender reads its request as untrusted
input (`coursekit.model_lending`). A connection the app closes mid-stream cancels the
model's stream, as a client disconnecting cancels an app's. This module is the app's
side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from starlette.requests import Request

from coursekit.llm import (
    Completion,
    CompletionDelta,
    ConversationError,
    ModelError,
    Usage,
    as_message,
    get_model,
)

# Where an app finds the lent model: "127.0.0.1:PORT/KEY" (set by the test).
LINK_ENV = "COURSEKIT_MODEL_LINK"
# Step 10's registry of lent models: JSON {"chat": {id: address}, "embedders": {id:
# address}, "created": int, "owned_by": str}.
REGISTRY_ENV = "COURSEKIT_MODEL_REGISTRY"
LINE_LIMIT = 1 << 20  # bytes in one line of the channel
# The failures a lent model may raise, raised again in the app as the same type with
# the same text; any other type arrives as a RuntimeError naming it.
ERRORS: dict[str, type[Exception]] = {
    kind.__name__: kind
    for kind in (
        ModelError,
        ConversationError,
        RuntimeError,
        OSError,
        ConnectionError,
        ConnectionResetError,
        TimeoutError,
        ValueError,
    )
}
MESSAGE_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name"}  # OpenAI's


def linked_model() -> Any:
    """Step 08's model dependency in a test: the lent model when a test lends one, else
    the course's zero-delay `TinyLM` (`coursekit.llm.get_model()`)."""
    address = os.environ.get(LINK_ENV, "")
    return LinkedLM(address) if address else get_model()


def linked_registry(request: Request) -> Any:
    """Step 10's registry dependency in a test: the app's own registry (what the given
    get_registry answers), its models replaced by the lent ones when a test lends some."""
    registry = request.app.state.registry
    lent = os.environ.get(REGISTRY_ENV, "")
    if not lent:
        return registry
    table = json.loads(lent)
    return dataclasses.replace(
        registry,
        chat={name: LinkedLM(address) for name, address in table["chat"].items()},
        embedders={name: LinkedEmbedder(address) for name, address in table["embedders"].items()},
        created=table["created"],
        owned_by=table["owned_by"],
    )


def _parse(address: str) -> tuple[str, int, str]:
    where, _, key = address.partition("/")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit() or not key:
        raise ValueError(f"a lent model's address looks like 127.0.0.1:PORT/KEY, not {address!r}")
    return host, int(port), key


def _raise(error: Mapping[str, Any]) -> None:
    name, message = str(error.get("type")), str(error.get("message", ""))
    if name in ERRORS:
        raise ERRORS[name](message)
    raise RuntimeError(f"{name}: {message}")


class LinkedLM:
    """The model a test lent (`lend`), as the app sees it: the same calls, the same
    tokens and deltas, the same failures."""

    name = "coursekit-linkedlm"

    def __init__(self, address: str) -> None:
        self.host, self.port, self.key = _parse(address)

    async def stream_chat(
        self,
        messages: Sequence[Any],
        *,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> AsyncIterator[str]:
        """Yield the lent model's tokens as it yields them; raise what it raised."""
        plain = [
            {"role": _field(message, "role"), "content": _field(message, "content")}
            for message in messages
        ]
        options = {"max_tokens": max_tokens, "seed": seed, "temperature": temperature}
        async for token in self._stream("stream_chat", messages=plain, **options):
            yield str(token)

    async def stream_complete(
        self,
        messages: Sequence[Any],
        *,
        tools: Sequence[Any] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
        stop: str | Sequence[str] | None = None,
    ) -> AsyncIterator[CompletionDelta]:
        """Yield the lent model's deltas as it yields them; raise what it raised."""
        request = _completion_request(messages, tools, max_tokens, seed, temperature, stop)
        async for item in self._stream("stream_complete", **request):
            yield _delta(item)

    async def complete(
        self,
        messages: Sequence[Any],
        *,
        tools: Sequence[Any] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
        stop: str | Sequence[str] | None = None,
    ) -> Completion:
        """The lent model's completion; raise what it raised."""
        request = _completion_request(messages, tools, max_tokens, seed, temperature, stop)
        result = None
        async for item in self._stream("complete", **request):
            result = item
        return _completion(result)

    async def _stream(self, call: str, **arguments: Any) -> AsyncIterator[Any]:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=LINE_LIMIT)
        try:  # closing the connection, for any reason, stops the lent model's stream
            request = {"key": self.key, "call": call, **arguments}
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("the lent model's channel closed mid-call")
                answer = json.loads(line)
                if "item" in answer:
                    yield answer["item"]
                elif "result" in answer:
                    yield answer["result"]
                    return
                elif "error" in answer:
                    _raise(answer["error"])
                else:
                    return
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


class LinkedEmbedder:
    """The embedder a test lent, as the app sees it: texts in, one vector per text out."""

    def __init__(self, address: str) -> None:
        self.host, self.port, self.key = _parse(address)

    def __call__(self, texts: list[str]) -> list[list[float]]:
        request = {"key": self.key, "call": "embed", "texts": list(texts)}
        with socket.create_connection((self.host, self.port), timeout=60) as connection:
            connection.sendall(json.dumps(request).encode() + b"\n")
            with connection.makefile("rb") as answers:
                line = answers.readline(LINE_LIMIT + 1)
        if not line:
            raise ConnectionError("the lent embedder's channel closed mid-call")
        answer = json.loads(line)
        if "error" in answer:
            _raise(answer["error"])
        return answer["result"]


def _field(message: Any, name: str) -> Any:
    """A message's `role` or `content`, from a dict or an object with attributes."""
    return message[name] if isinstance(message, Mapping) else getattr(message, name)


def _completion_request(
    messages: Sequence[Any],
    tools: Sequence[Any] | None,
    max_tokens: int,
    seed: int,
    temperature: float,
    stop: str | Sequence[str] | None,
) -> dict[str, Any]:
    """The arguments of a `complete` or `stream_complete` call, as plain JSON data."""
    return {
        "messages": [as_message(message) for message in messages],
        "tools": None if tools is None else [_as_data(tool) for tool in tools],
        "max_tokens": max_tokens,
        "seed": seed,
        "temperature": temperature,
        "stop": stop if stop is None or isinstance(stop, str) else list(stop),
    }


def _as_data(value: Any) -> Any:
    """A tool's spec as plain data: a Pydantic model's fields that are set, or a dict."""
    return value.model_dump(exclude_none=True) if hasattr(value, "model_dump") else dict(value)


def _usage(data: Any) -> Usage | None:
    return None if data is None else Usage(data["prompt_tokens"], data["completion_tokens"])


def _delta(data: Mapping[str, Any]) -> CompletionDelta:
    return CompletionDelta(
        content=data["content"],
        tool_calls=data["tool_calls"],
        finish_reason=data["finish_reason"],
        usage=_usage(data["usage"]),
    )


def _completion(data: Any) -> Completion:
    if not isinstance(data, Mapping):
        raise ConnectionError("the lent model's channel answered no completion")
    usage = _usage(data["usage"])
    assert usage is not None
    return Completion(data["message"], data["finish_reason"], usage, tuple(data["tokens"]))
