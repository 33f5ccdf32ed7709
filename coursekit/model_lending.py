"""The test's side of the model channel (`coursekit.model_link`): lend a model.

`lend(model)` serves a chat model, or an embedder, on loopback from the test's process
while a block runs; `lend_registry` lends step 10's whole registry. Each connection is
one call of the app's `LinkedLM` or `LinkedEmbedder`. The app's side is the submission's
code, so its request is read as untrusted input (`_checked`): a wrong key, a call the
lent object does not have, an argument of the wrong type or a line over `LINE_LIMIT`
closes the connection, and the model is never called.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from coursekit.llm import Completion, CompletionDelta
from coursekit.model_link import LINE_LIMIT, MESSAGE_KEYS


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
