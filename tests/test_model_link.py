"""coursekit.model_link: a test's model lent to an app in another process.

Step 08's graded tests hold the model the app streams from (a gate, a recorder, a model
that fails) while the app runs apart from them; these checks prove the channel keeps
what those tests rely on, and that it refuses what it does not serve.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from coursekit.embeddings import embed
from coursekit.llm import FailingLM, GatedLM, ModelError, TinyLM, get_model
from coursekit.model_lending import lend, lend_registry
from coursekit.model_link import (
    LINE_LIMIT,
    LINK_ENV,
    REGISTRY_ENV,
    LinkedEmbedder,
    LinkedLM,
    linked_model,
    linked_registry,
)
from tests.helpers import ROOT

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]


class Counting:
    """The course's model, counting the streams it was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def stream_chat(self, messages: Any, **options: Any) -> AsyncIterator[str]:
        self.calls.append((messages, options))
        return get_model().stream_chat(messages, **options)


async def tokens_of(address: str, messages: Any = MESSAGES, **options: Any) -> list[str]:
    return [token async for token in LinkedLM(address).stream_chat(messages, **options)]


def test_the_app_gets_the_models_tokens_and_the_model_the_apps_request() -> None:
    model = Counting()
    with lend(model) as address:
        got = asyncio.run(tokens_of(address, max_tokens=5, seed=3, temperature=0.5))
    assert got == get_model().generate(MESSAGES, max_tokens=5, seed=3, temperature=0.5)
    assert model.calls == [
        (MESSAGES, {"max_tokens": 5, "seed": 3, "temperature": 0.5}),
    ]


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (ModelError("the model server crashed"), ModelError),
        (OSError("reset"), OSError),
        (TimeoutError("slow"), TimeoutError),
        (KeyError("odd"), RuntimeError),  # a type the channel does not carry
    ],
)
def test_a_failure_reaches_the_app_with_its_type_and_text(
    error: Exception, raised: type[Exception]
) -> None:
    model = FailingLM(2, error=error)
    received: list[str] = []

    async def read(address: str) -> None:
        async for token in LinkedLM(address).stream_chat(MESSAGES, max_tokens=6):
            received.append(token)

    with lend(model) as address, pytest.raises(raised) as caught:
        asyncio.run(read(address))
    assert type(caught.value) is raised
    assert str(error) in str(caught.value)
    if raised is RuntimeError:  # a type the channel does not carry is named in the text
        assert type(error).__name__ in str(caught.value)
    assert received == model.generate(MESSAGES, max_tokens=6)[:2]


def test_an_app_that_stops_reading_closes_the_models_stream() -> None:
    gated = GatedLM(timeout=30)

    async def first_only(address: str) -> str:
        stream = LinkedLM(address).stream_chat(MESSAGES, max_tokens=20)
        first = await anext(stream)
        await stream.aclose()  # what a server does when its client has gone
        return first

    with lend(gated) as address:
        first = asyncio.run(first_only(address))
        assert gated.stopped.wait(10)
    assert first == gated.generate(MESSAGES, max_tokens=20)[0]
    assert gated.closed_early.is_set() and gated.stop_reason == "cancelled"
    assert gated.tokens_yielded == 1


def test_the_channel_works_from_another_process() -> None:
    # As in a grading run: the model here, the app's side in a process of its own.
    gated = GatedLM(timeout=30)
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from coursekit.model_link import linked_model

        async def main():
            stream = linked_model().stream_chat(json.loads(sys.argv[1]), max_tokens=9)
            print(await anext(stream), flush=True)
            sys.stdin.readline()  # the test lets the second token through, then says go
            print(await anext(stream), flush=True)
            await stream.aclose()

        asyncio.run(main())
        """
    )
    expected = gated.generate(MESSAGES, max_tokens=9)
    with lend(gated) as address:
        env = {**os.environ, "PYTHONPATH": str(ROOT), LINK_ENV: address}
        app = subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(MESSAGES)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert app.stdout is not None and app.stdin is not None
            assert app.stdout.readline().rstrip("\n") == expected[0]
            assert gated.tokens_yielded == 1  # the second token waits at the gate
            gated.allow(1)
            app.stdin.write("go\n")
            app.stdin.flush()
            assert app.stdout.readline().rstrip("\n") == expected[1]
            assert app.wait(timeout=30) == 0
        finally:
            app.kill()
        assert gated.stopped.wait(10)
    assert gated.stop_reason == "cancelled" and gated.tokens_yielded == 2


def send(address: str, data: bytes) -> bytes:
    """What the lender answers to `data`, sent as is on a fresh connection."""
    host, port = address.split("/")[0].split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        try:
            connection.sendall(data)  # no half-close: to the lender, that is the app gone
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionError:  # it hung up before reading all we sent
            pass
    return answer


def request(address: str, **changes: Any) -> bytes:
    body = {
        "key": address.split("/")[1],
        "call": "stream_chat",
        "messages": MESSAGES,
        "max_tokens": 3,
        "seed": 0,
        "temperature": 1.0,
    }
    body.update(changes)
    return json.dumps(body).encode() + b"\n"


@pytest.mark.parametrize(
    "bad",
    [
        {"key": "not-the-key"},
        {"call": "generate"},  # not a call of the channel
        {"call": "complete"},  # a call this model does not have
        {"call": "embed", "texts": ["hi"]},  # nor this one: it is not an embedder
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": 7}]},
        {"messages": "hello"},
        {"max_tokens": "3"},
        {"max_tokens": True},
        {"seed": 1.5},
        {"temperature": float("nan")},
        {"temperature": "hot"},
    ],
    ids=lambda bad: ",".join(f"{k}={v!r}" for k, v in bad.items()),
)
def test_a_request_the_channel_does_not_serve_never_reaches_the_model(bad: dict) -> None:
    model = Counting()
    with lend(model) as address:
        assert send(address, request(address, **bad)) == b""
        # The lender goes on serving a well-formed request afterwards.
        lines = send(address, request(address)).splitlines()
    assert len(model.calls) == 1
    assert [json.loads(line) for line in lines][-1] == {"end": True}


def test_junk_and_an_overlong_line_never_reach_the_model() -> None:
    model = Counting()
    with lend(model) as address:
        assert send(address, b"\xff\xfe not json\n") == b""
        assert send(address, b"x" * (LINE_LIMIT + 10) + b"\n") == b""
        assert send(address, b"\n") == b""
    assert model.calls == []


def test_linked_model_is_the_course_model_unless_a_test_lends_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(LINK_ENV, raising=False)
    assert isinstance(linked_model(), TinyLM)
    monkeypatch.setenv(LINK_ENV, "127.0.0.1:8123/key")
    linked = linked_model()
    assert isinstance(linked, LinkedLM) and (linked.host, linked.port) == ("127.0.0.1", 8123)
    monkeypatch.setenv(LINK_ENV, "127.0.0.1:port")
    with pytest.raises(ValueError, match=r"127\.0\.0\.1:PORT/KEY"):
        linked_model()


# A tool TinyLM calls when the user's message names it ("echo: ...").
ECHO = {
    "type": "function",
    "function": {
        "name": "echo",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
}


@pytest.mark.parametrize(
    ("messages", "finish"),
    [(MESSAGES, "length"), ([{"role": "user", "content": "echo: a parcel"}], "tool_calls")],
    ids=["text", "tool call"],
)
def test_completions_and_their_deltas_are_the_models(messages: list[dict], finish: str) -> None:
    # Step 10's calls: what the app gets through the channel is what the model made.
    model = get_model()
    options: dict[str, Any] = {"tools": [ECHO], "max_tokens": 6, "seed": 2}
    options |= {"temperature": 0.5, "stop": ["zzz"]}

    async def both(address: str) -> tuple[Any, list[Any]]:
        linked = LinkedLM(address)
        completion = await linked.complete(messages, **options)
        deltas = [delta async for delta in linked.stream_complete(messages, **options)]
        return completion, deltas

    with lend(model) as address:
        completion, deltas = asyncio.run(both(address))
    expected = model.reply(messages, **options)
    assert expected.finish_reason == finish  # each case is the kind of answer it names
    assert completion == expected
    assert deltas == expected.deltas()


def test_an_embedder_is_lent_too() -> None:
    texts = ["my parcel never arrived", "I was charged twice"]
    with lend(embed) as address:
        assert LinkedEmbedder(address)(texts) == embed(texts)
        lines = send(
            address,
            json.dumps({"key": address.split("/")[1], "call": "embed", "texts": [1, 2]}).encode()
            + b"\n",
        )
    assert lines == b""  # texts that are not strings never reach the embedder


@dataclasses.dataclass(frozen=True)
class Registry:
    """The shape of step 10's service.Registry."""

    chat: Mapping[str, Any]
    embedders: Mapping[str, Any]
    created: int
    owned_by: str = "coursekit"


def test_a_registry_of_lent_models_replaces_the_apps_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own = Registry(chat={"coursekit-tinylm": get_model()}, embedders={}, created=5)
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(registry=own)))
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    assert linked_registry(request) is own  # no test lends: the given get_registry's answer
    gated = GatedLM()
    with lend_registry(
        {"tiny-a": gated}, {"emb-a": embed}, created=1_700_000_000, owned_by="the-tests"
    ) as table:
        monkeypatch.setenv(REGISTRY_ENV, table)
        registry = linked_registry(request)
        assert (registry.created, registry.owned_by) == (1_700_000_000, "the-tests")
        assert list(registry.chat) == ["tiny-a"] and list(registry.embedders) == ["emb-a"]
        assert registry.embedders["emb-a"](["hi"]) == embed(["hi"])
        completion = asyncio.run(registry.chat["tiny-a"].complete(MESSAGES, max_tokens=3))
    assert completion == get_model().reply(MESSAGES, max_tokens=3)
