"""A test's chat model, lent to an app that runs in another process.

The grader may serve a learner's app in a process of its own, apart from the tests. A
test that must hold the model the app uses (a gate it opens token by token, a recorder
of the calls, a model that fails mid-answer) keeps that model in its own process and
lends it: `lend(model)` serves the model's `stream_chat` on loopback, and an app whose
model dependency answers `linked_model()` streams from it through a `LinkedLM`. What
the test checks on the model (its gate, its calls, why its stream stopped) stays true:
the model runs where the test runs.

The channel is narrow: one stream per connection, one JSON line each way per item.
  app -> lender: {"key", "messages": [{"role", "content"}], "max_tokens", "seed",
                  "temperature"}
  lender -> app: {"token": "..."} per token, then {"end": true} or
                 {"error": {"type": "OSError", "message": "..."}}
The app's side is the submission's code, so the lender reads its request as untrusted
input: a wrong key, a field of the wrong type or a line over 1 MiB closes the
connection, and the model is never called. A connection the app closes mid-stream
cancels the model's stream, as a client disconnecting cancels an app's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from coursekit.llm import ChatModel, Messages, ModelError, get_model

# Where an app finds the lent model: "127.0.0.1:PORT/KEY" (set by the test).
LINK_ENV = "COURSEKIT_MODEL_LINK"
LINE_LIMIT = 1 << 20  # bytes in one line of the channel
# The failures a lent model's stream may raise, raised again in the app as the same
# type with the same text; any other type arrives as a RuntimeError naming it.
ERRORS: dict[str, type[Exception]] = {
    kind.__name__: kind
    for kind in (
        ModelError,
        RuntimeError,
        OSError,
        ConnectionError,
        ConnectionResetError,
        TimeoutError,
        ValueError,
    )
}


def linked_model() -> ChatModel:
    """The model an app's dependency answers: the lent one when a test lends one, else
    the course's zero-delay `TinyLM` (`coursekit.llm.get_model()`)."""
    address = os.environ.get(LINK_ENV, "")
    return LinkedLM(address) if address else get_model()


class LinkedLM:
    """The `ChatModel` of the process that lent a model (`lend`), seen from the app."""

    name = "coursekit-linkedlm"

    def __init__(self, address: str) -> None:
        where, _, self.key = address.partition("/")
        host, _, port = where.rpartition(":")
        if not host or not port.isdigit() or not self.key:
            raise ValueError(f"{LINK_ENV} must look like 127.0.0.1:PORT/KEY, not {address!r}")
        self.host, self.port = host, int(port)

    async def stream_chat(
        self,
        messages: Messages,
        *,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> AsyncIterator[str]:
        """Yield the lent model's tokens as it yields them; raise what it raised."""
        request = {
            "key": self.key,
            "messages": [
                {"role": _field(message, "role"), "content": _field(message, "content")}
                for message in messages
            ],
            "max_tokens": max_tokens,
            "seed": seed,
            "temperature": temperature,
        }
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=LINE_LIMIT)
        try:  # closing the connection, for any reason, stops the lent model's stream
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("the lent model's channel closed mid-stream")
                item = json.loads(line)
                if "token" in item:
                    yield str(item["token"])
                elif "error" in item:
                    kind = ERRORS.get(item["error"].get("type"), RuntimeError)
                    raise kind(str(item["error"].get("message", "")))
                else:
                    return
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


@contextlib.contextmanager
def lend(model: ChatModel) -> Iterator[str]:
    """Serve `model` on loopback while the block runs: its address, for `LINK_ENV`."""
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
            streams = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in streams:
                task.cancel()  # a stream the app never ended ends with the test
            await asyncio.gather(*streams, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()


async def _answer(
    model: ChatModel, key: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One stream: read and check the app's request, stream the model's answer to it,
    and cancel the model's stream if the app closes the connection first."""
    try:
        try:
            request = _checked(json.loads(await reader.readline()), key)
        except (ValueError, asyncio.LimitOverrunError):
            return  # not a request of this channel: the model is not called
        streaming = asyncio.ensure_future(_stream(model, request, writer))
        hang_up = asyncio.ensure_future(reader.read(1))  # b"" once the app closes
        await asyncio.wait({streaming, hang_up}, return_when=asyncio.FIRST_COMPLETED)
        if not streaming.done():
            streaming.cancel()  # the app went away: stop the model's stream
        hang_up.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await streaming
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await writer.wait_closed()


async def _stream(model: ChatModel, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
    async def send(item: dict[str, Any]) -> None:
        writer.write(json.dumps(item).encode() + b"\n")
        await writer.drain()

    stream = model.stream_chat(
        request["messages"],
        max_tokens=request["max_tokens"],
        seed=request["seed"],
        temperature=request["temperature"],
    )
    try:
        async for token in stream:
            await send({"token": token})
    except Exception as error:  # the test's model failed: the app gets the same failure
        await send({"error": {"type": type(error).__name__, "message": str(error)}})
        return
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    await send({"end": True})


def _checked(request: Any, key: str) -> dict[str, Any]:
    """The app's request, if it is one this channel serves; ValueError otherwise."""
    if not isinstance(request, dict) or not secrets.compare_digest(
        str(request.get("key", "")), key
    ):
        raise ValueError("not this channel's key")
    messages = request.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict)
        and set(m) == {"role", "content"}
        and all(isinstance(m[f], str) for f in m)
        for m in messages
    ):
        raise ValueError("messages must be [{role, content}] of strings")
    numbers = {name: request.get(name) for name in ("max_tokens", "seed")}
    if not all(type(value) is int for value in numbers.values()):
        raise ValueError("max_tokens and seed must be integers")
    temperature = request.get("temperature")
    if type(temperature) not in (int, float) or not math.isfinite(temperature):
        raise ValueError("temperature must be a finite number")
    return {"messages": messages, **numbers, "temperature": float(temperature)}


def _field(message: Mapping[str, Any] | Any, name: str) -> Any:
    """A message's `role` or `content`, from a dict or an object with attributes."""
    return message[name] if isinstance(message, Mapping) else getattr(message, name)
