"""A test's models, lent to an app that runs in another process.

The grader may serve a learner's app in a process of its own, apart from the tests. A
test that must hold a model the app uses (a gate it opens token by token, a recorder
of the calls, a model that fails mid-answer) keeps that model in its own process and
lends it: `lend(model)` serves the model on loopback, and the app reaches it through a
`LinkedLM` (or a `LinkedEmbedder`), which its model dependency answers: step 08's
`linked_model()`, step 10's `linked_registry()`. What the test checks on the model (its
gate, its calls, why its stream stopped) stays true: the model runs where the test runs.

The channel is narrow: one call per connection, one JSON line each way per item.
  app -> lender: {"key", "call", ...the call's arguments}, where "call" is
    "stream_chat" (messages [{role, content}], max_tokens, seed, temperature),
    "complete" or "stream_complete" (messages in OpenAI's shape, tools, max_tokens,
    seed, temperature, stop), or "embed" (texts)
  lender -> app: {"item": ...} per token or delta, then {"end": true}; {"result": ...}
    for a call that is not a stream; or {"error": {"type": "OSError", "message": "..."}}
The app's side is the submission's code, so the lender reads its request as untrusted
input: a wrong key, a call the model does not have, an argument of the wrong type or a
line over 1 MiB closes the connection, and the model is never called. A connection the
app closes mid-stream cancels the model's stream, as a client disconnecting cancels an
app's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
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
STREAMS = ("stream_chat", "stream_complete")  # calls answered item by item
MESSAGE_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name"}


# --- The app's side -------------------------------------------------------------------


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
    kind = ERRORS.get(str(error.get("type")), RuntimeError)
    raise kind(str(error.get("message", "")))


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


# --- The test's side --------------------------------------------------------------------


@contextlib.contextmanager
def lend(model: Any) -> Iterator[str]:
    """Serve `model` (a chat model, or an embedder: a callable of texts) on loopback while
    the block runs: its address, for `LINK_ENV` or a registry of `REGISTRY_ENV`."""
    key = secrets.token_urlsafe(16)
    loop = asyncio.new_event_loop()
    ready: list[asyncio.Server] = []
    started = threading.Event()

    async def open_server() -> None:
        ready.append(
            await asyncio.start_server(
                lambda r, w: _answer(model, key, r, w), "127.0.0.1", 0, limit=LINE_LIMIT
            )
        )

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(open_server())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="model-link", daemon=True)
    thread.start()
    started.wait()
    server = ready[0]
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}/{key}"
    finally:

        async def shut() -> None:
            server.close()
            calls = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in calls:
                task.cancel()  # a stream the app never ended ends with the test
            await asyncio.gather(*calls, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()


@contextlib.contextmanager
def lend_registry(
    chat: Mapping[str, Any],
    embedders: Mapping[str, Callable[[list[str]], list[list[float]]]],
    *,
    created: int,
    owned_by: str,
) -> Iterator[str]:
    """Lend every model of a registry: the value of `REGISTRY_ENV` for the app."""
    with contextlib.ExitStack() as stack:
        table = {
            "chat": {name: stack.enter_context(lend(model)) for name, model in chat.items()},
            "embedders": {
                name: stack.enter_context(lend(embedder)) for name, embedder in embedders.items()
            },
            "created": created,
            "owned_by": owned_by,
        }
        yield json.dumps(table)


async def _answer(
    model: Any, key: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One call: read and check the app's request, answer it from the model, and cancel
    the model's stream if the app closes the connection first."""
    try:
        try:
            call, arguments = _checked(json.loads(await reader.readline()), key, model)
        except ValueError:  # also a line over the limit, or one that is not UTF-8
            return  # not a request of this channel: the model is not called
        working = asyncio.ensure_future(_serve(model, call, arguments, writer))
        hang_up = asyncio.ensure_future(reader.read(1))  # b"" once the app closes
        await asyncio.wait({working, hang_up}, return_when=asyncio.FIRST_COMPLETED)
        if not working.done():
            working.cancel()  # the app went away: stop the model's stream
        hang_up.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await working
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await writer.wait_closed()


async def _serve(model: Any, call: str, arguments: dict[str, Any], writer: Any) -> None:
    async def send(answer: dict[str, Any]) -> None:
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()

    try:
        if call == "embed":
            vectors = model(arguments["texts"])
            await send({"result": [[float(x) for x in vector] for vector in vectors]})
            return
        messages = arguments.pop("messages")
        if call == "complete":
            completion = await model.complete(messages, **arguments)
            await send({"result": _plain(completion)})
            return
        stream = getattr(model, call)(messages, **arguments)
        try:
            async for item in stream:
                await send({"item": item if call == "stream_chat" else _plain(item)})
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
    except Exception as error:  # the test's model failed: the app gets the same failure
        await send({"error": {"type": type(error).__name__, "message": str(error)}})
        return
    await send({"end": True})


def _plain(value: Completion | CompletionDelta) -> dict[str, Any]:
    data = dataclasses.asdict(value)
    if isinstance(value, Completion):
        data["tokens"] = list(value.tokens)
    return data


def _checked(request: Any, key: str, model: Any) -> tuple[str, dict[str, Any]]:
    """The app's request as (call, arguments), if this channel serves it; else ValueError."""
    if not isinstance(request, dict) or not secrets.compare_digest(
        str(request.get("key", "")), key
    ):
        raise ValueError("not this channel's key")
    call = request.get("call")
    if call == "embed":
        texts = request.get("texts")
        if not callable(model) or not _strings(texts):
            raise ValueError("embed takes texts, a list of strings, of an embedder")
        return call, {"texts": texts}
    if call not in ("stream_chat", "complete", "stream_complete") or not hasattr(model, call):
        raise ValueError(f"the lent model has no call {call!r}")
    messages = request.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("messages must be a list of objects")
    if call == "stream_chat":
        if not all(set(m) == {"role", "content"} and _strings(list(m.values())) for m in messages):
            raise ValueError("stream_chat's messages are [{role, content}] of strings")
    elif not all(_openai_message(m) for m in messages):
        raise ValueError("messages must be in OpenAI's shape")
    numbers = {name: request.get(name) for name in ("max_tokens", "seed")}
    if not all(type(value) is int for value in numbers.values()):
        raise ValueError("max_tokens and seed must be integers")
    temperature = request.get("temperature")
    if type(temperature) not in (int, float) or not math.isfinite(temperature):
        raise ValueError("temperature must be a finite number")
    arguments = {"messages": messages, **numbers, "temperature": float(temperature)}
    if call != "stream_chat":
        tools, stop = request.get("tools"), request.get("stop")
        if tools is not None and not (
            isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
        ):
            raise ValueError("tools must be a list of objects")
        if not (stop is None or isinstance(stop, str) or _strings(stop)):
            raise ValueError("stop must be a string or a list of strings")
        arguments |= {"tools": tools, "stop": stop}
    return call, arguments


def _strings(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(value, str) for value in values)


def _openai_message(message: dict[str, Any]) -> bool:
    """A message with a string role and only OpenAI's fields, of JSON's types."""
    return (
        set(message) <= MESSAGE_KEYS
        and isinstance(message.get("role"), str)
        and (message.get("content") is None or isinstance(message.get("content"), str))
        and isinstance(message.get("tool_calls", []), list)
        and isinstance(message.get("tool_call_id", ""), str)
        and isinstance(message.get("name", ""), str)
    )
