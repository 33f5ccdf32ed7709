"""A tiny, seeded language model that streams tokens like a chat API.

The course never calls a hosted LLM. Instead, `TinyLM` is a word-level trigram model
trained (in a few milliseconds, on first use) on `coursekit/data/corpus.txt`, prose the
course wrote itself. It sits behind the same async interface a real chat client
offers, the `ChatModel` protocol, so a lesson can swap it for an OpenAI-compatible
client (see `OpenAIChatModel`) and nothing else in the service changes.

Tokens
    A token is one word of the corpus, where a word is a maximal run of
    non-whitespace characters (punctuation stays attached: ``"model."``). The first
    token of an answer is the bare word; every later token is a single space followed
    by the word. So no token is empty or contains a newline, and ``"".join(tokens)``
    is the answer's text with single spaces between words.

Generation
    The answer starts at a word of the last user message that also occurs in the
    corpus (words of four letters or more, compared without case or punctuation;
    if there is none, at the start of a corpus sentence). Each next word is drawn
    from the words that follow the last two in the corpus, backing off to the last
    one, then to all words. There is no end-of-text token: an answer always has
    exactly `max_tokens` tokens, unless `reply`/`complete`/`stream_complete` are given
    `stop` sequences, which cut the text before the first of them (finish_reason
    "stop", see `cut_at_stop`). For a given (last user message, seed, max_tokens,
    temperature) the tokens are always the same, and a shorter answer is a prefix
    of a longer one with the same seed and temperature.

Test double
    `GatedLM` streams the same tokens (or, from `stream_complete`, the same deltas)
    but holds each one after the first until a test lets it through, from any
    thread, and records whether the consumer stopped the stream early (a client that
    disconnected).

    `FailingLM` streams the same tokens and then fails mid-answer: it yields the first
    `fail_after` tokens and raises an error (`ModelError` unless told otherwise), as a
    real model server does when it crashes or drops the connection after the response
    has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, NotRequired, Protocol, TypeAlias, TypeVar

# Pydantic refuses typing.TypedDict on Python < 3.12; this one also works as a field
# type in a request model (`messages: list[ChatMessage]`).
from typing_extensions import TypedDict


class ChatMessage(TypedDict):
    """One message of a chat, in the shape OpenAI-compatible APIs use."""

    role: Literal["system", "user", "assistant"]
    content: str


class MessageLike(Protocol):
    """Any object with `role` and `content` attributes, such as a Pydantic model."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


Messages: TypeAlias = Sequence[ChatMessage | MessageLike]


class ChatModel(Protocol):
    """What a service needs from a chat model: an async stream of text tokens.

    `TinyLM`, `GatedLM` and `OpenAIChatModel` all satisfy it, so an endpoint typed
    against `ChatModel` works with any of them.
    """

    def stream_chat(
        self,
        messages: Messages,
        *,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> AsyncIterator[str]:
        """Yield the answer's tokens one by one as they are generated."""
        ...


# Short words ("the", "is", "of") appear everywhere in the corpus and say nothing
# about what the user asked, so only longer words choose where an answer starts.
_MIN_KEYWORD_LENGTH = 4
_CORPUS = "data/corpus.txt"


def _normalize(word: str) -> str:
    """The form of a word used to match prompt words against corpus words."""
    return word.strip(".,;:!?\"'()[]").lower()


@dataclass(frozen=True)
class _Distribution:
    """The words seen after one context, with how often each was seen."""

    words: tuple[str, ...]
    counts: tuple[int, ...]


_Context = TypeVar("_Context")


def _distributions(counters: dict[_Context, Counter[str]]) -> dict[_Context, _Distribution]:
    return {
        key: _Distribution(tuple(counter), tuple(counter.values()))
        for key, counter in counters.items()
    }


@dataclass(frozen=True)
class _NGrams:
    """Everything `TinyLM` learns from a corpus."""

    words: tuple[str, ...]
    unigrams: _Distribution
    bigrams: dict[str, _Distribution]
    trigrams: dict[tuple[str, str], _Distribution]
    # Where each normalized word occurs, in corpus order, so choices are reproducible.
    positions: dict[str, tuple[int, ...]]
    sentence_starts: tuple[int, ...]

    @classmethod
    def train(cls, text: str) -> _NGrams:
        """Count the unigrams, bigrams and trigrams of `text`."""
        words = tuple(text.split())
        if len(words) < 3:
            raise ValueError("a corpus needs at least three words")
        bigrams: dict[str, Counter[str]] = defaultdict(Counter)
        trigrams: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        positions: dict[str, list[int]] = defaultdict(list)
        for i, word in enumerate(words):
            positions[_normalize(word)].append(i)
            if i >= 1:
                bigrams[words[i - 1]][word] += 1
            if i >= 2:
                trigrams[words[i - 2], words[i - 1]][word] += 1
        unigrams = Counter(words)
        starts = tuple(i for i in range(len(words)) if i == 0 or words[i - 1].endswith("."))
        return cls(
            words=words,
            unigrams=_Distribution(tuple(unigrams), tuple(unigrams.values())),
            bigrams=_distributions(bigrams),
            trigrams=_distributions(trigrams),
            positions={word: tuple(found) for word, found in positions.items()},
            sentence_starts=starts,
        )


@cache
def _shipped_ngrams() -> _NGrams:
    """The n-grams of the course corpus, trained once per process."""
    text = resources.files("coursekit").joinpath(_CORPUS).read_text(encoding="utf-8")
    return _NGrams.train(text)


def _field(message: ChatMessage | MessageLike, name: str) -> str:
    """Read `role` or `content` from a dict or from an object with attributes."""
    if isinstance(message, Mapping):
        return str(message[name])
    return str(getattr(message, name))


def last_user_message(messages: Messages) -> str:
    """The content of the last message whose role is "user" ("" if there is none)."""
    if not messages:
        raise ValueError("messages must not be empty")
    for message in reversed(messages):
        if _field(message, "role") == "user":
            return _field(message, "content")
    return ""


def _check_parameters(max_tokens: int, temperature: float) -> None:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must not be negative, got {temperature}")


class TinyLM:
    """A seeded word-trigram chat model with an async, OpenAI-like streaming API.

    `delay` is the time each token takes to "generate", in seconds. The stream waits
    it with `asyncio.sleep`, so a slow model never blocks the event loop.
    """

    name = "coursekit-tinylm"

    def __init__(self, corpus: str | None = None, *, delay: float = 0.0) -> None:
        """Train on `corpus`, or use the course corpus (trained once) if it is None."""
        if delay < 0:
            raise ValueError(f"delay must not be negative, got {delay}")
        self.delay = delay
        self._ngrams = _shipped_ngrams() if corpus is None else _NGrams.train(corpus)

    def generate(
        self,
        messages: Messages,
        *,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> list[str]:
        """Return, at once, exactly the tokens `stream_chat` would yield."""
        return list(self._tokens(messages, max_tokens, seed, temperature))

    async def stream_chat(
        self,
        messages: Messages,
        *,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> AsyncIterator[str]:
        """Yield the answer's tokens, waiting `delay` seconds before each one.

        Tokens are produced one at a time, so a consumer that stops early (a client
        that disconnected) also stops the generation.
        """
        for token in self._tokens(messages, max_tokens, seed, temperature):
            # Even a zero delay gives the event loop a turn between tokens.
            await asyncio.sleep(self.delay)
            yield token

    def _tokens(
        self, messages: Messages, max_tokens: int, seed: int, temperature: float
    ) -> Iterator[str]:
        _check_parameters(max_tokens, temperature)
        rng = random.Random(seed)
        word = self._first_word(last_user_message(messages), rng)
        yield word
        previous: str | None = None
        for _ in range(max_tokens - 1):
            previous, word = word, self._next_word(previous, word, rng, temperature)
            yield " " + word

    def _first_word(self, prompt: str, rng: random.Random) -> str:
        ngrams = self._ngrams
        candidates: list[int] = []
        for raw_word in prompt.split():
            word = _normalize(raw_word)
            if len(word) >= _MIN_KEYWORD_LENGTH:
                candidates.extend(ngrams.positions.get(word, ()))
        position = rng.choice(candidates or ngrams.sentence_starts)
        return ngrams.words[position]

    def _next_word(
        self, previous: str | None, word: str, rng: random.Random, temperature: float
    ) -> str:
        ngrams = self._ngrams
        options = (
            ngrams.trigrams.get((previous, word)) if previous is not None else None
        ) or ngrams.bigrams.get(word, ngrams.unigrams)
        if temperature == 0:
            # Greedy: the most frequent follower; ties go to the one seen first.
            return options.words[options.counts.index(max(options.counts))]
        weights = [count ** (1 / temperature) for count in options.counts]
        return rng.choices(options.words, weights)[0]

    # -- tool calling (see "Tool calling and token counting" below) -----------------

    def reply(
        self,
        messages: Messages | Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
        stop: str | Sequence[str] | None = None,
    ) -> Completion:
        """Return, at once, the `Completion` that `complete` would return."""
        return _tiny_completion(self, messages, tools, max_tokens, seed, temperature, stop)

    async def complete(
        self,
        messages: Messages | Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
        stop: str | Sequence[str] | None = None,
    ) -> Completion:
        """The assistant's next message for `messages`: text, or calls of `tools`.

        Raises `ConversationError` for a conversation OpenAI's API would refuse
        with a 400 (see `check_conversation`). With `stop`, a text answer ends just
        before the first stop sequence it contains, with finish_reason "stop".
        """
        completion = self.reply(
            messages,
            tools=tools,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            stop=stop,
        )
        await asyncio.sleep(self.delay)
        return completion

    async def stream_complete(
        self,
        messages: Messages | Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
        stop: str | Sequence[str] | None = None,
    ) -> AsyncIterator[CompletionDelta]:
        """The same message as `complete`, as deltas (see `CompletionDelta`)."""
        completion = self.reply(
            messages,
            tools=tools,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            stop=stop,
        )
        for delta in completion.deltas():
            await asyncio.sleep(self.delay)
            yield delta


@cache
def get_model(delay: float = 0.0) -> TinyLM:
    """The shared `TinyLM` for this `delay` (the corpus is parsed once per process)."""
    return TinyLM(delay=delay)


StopReason: TypeAlias = Literal["completed", "closed", "cancelled", "timeout"]
_Item = TypeVar("_Item")


class GatedLM:
    """A `TinyLM` whose stream a test controls, from any thread.

    The first token of each stream is yielded at once; every later token waits until
    the test calls `allow(n)` (let `n` more tokens through) or `release()` (let all
    remaining tokens through). A test can then check that a client received a token
    while the rest of the answer was still held back: proof of real streaming.

    The app under test runs in uvicorn's thread and the test in another, so the gate
    is a `threading.Semaphore`, polled from async code with short sleeps: the event
    loop never blocks, and a cancelled stream leaves no thread waiting. A token
    that is not let through within `timeout` seconds raises `TimeoutError` inside
    the stream, so a forgotten `allow` fails the test instead of hanging it.

    What happened is recorded in thread-safe `threading.Event`s that a test can
    wait on: `started`, `stopped` (for any reason), `completed` (every token was
    yielded), `closed_early` (the consumer closed or cancelled the stream before its
    end, as a server does when the client disconnects). `stop_reason` says which.
    Counts add up over every stream; use one `GatedLM` per test.
    """

    name = "coursekit-gatedlm"

    def __init__(
        self, model: TinyLM | None = None, *, timeout: float = 5.0, poll: float = 0.005
    ) -> None:
        """Wrap `model` (the shared zero-delay `TinyLM` by default)."""
        self.model = model if model is not None else get_model()
        self.timeout = timeout
        self.poll = poll
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.completed = threading.Event()
        self.closed_early = threading.Event()
        self.stop_reason: StopReason | None = None
        self._permits = threading.Semaphore(0)
        self._open = threading.Event()
        self._yielded = threading.Condition()
        self._tokens_yielded = 0

    def allow(self, n: int = 1) -> None:
        """Let `n` more tokens through the gate (safe to call from any thread)."""
        self._permits.release(n)

    def release(self) -> None:
        """Open the gate for good: every remaining token streams without waiting."""
        self._open.set()

    @property
    def tokens_yielded(self) -> int:
        """How many tokens the streams have handed to their consumers so far."""
        with self._yielded:
            return self._tokens_yielded

    def wait_for_tokens(self, n: int, timeout: float | None = None) -> bool:
        """Block until `n` tokens have been yielded; False if `timeout` passed first."""
        with self._yielded:
            return self._yielded.wait_for(lambda: self._tokens_yielded >= n, timeout)

    def generate(
        self,
        messages: Messages,
        *,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> list[str]:
        """Return the tokens the stream will yield (the wrapped model's answer)."""
        return self.model.generate(
            messages, max_tokens=max_tokens, seed=seed, temperature=temperature
        )

    async def stream_chat(
        self,
        messages: Messages,
        *,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> AsyncIterator[str]:
        """Yield the wrapped model's tokens, holding each after the first at the gate."""
        tokens = self.generate(messages, max_tokens=max_tokens, seed=seed, temperature=temperature)
        # aclosing: when our consumer closes this stream, the gated one closes at once.
        async with contextlib.aclosing(self._gated(tokens)) as items:
            async for token in items:
                yield token

    def reply(
        self,
        messages: Messages | Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
        stop: str | Sequence[str] | None = None,
    ) -> Completion:
        """The wrapped model's `Completion`, at once (no gate: what a test expects)."""
        return self.model.reply(
            messages,
            tools=tools,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            stop=stop,
        )

    async def complete(
        self,
        messages: Messages | Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
        stop: str | Sequence[str] | None = None,
    ) -> Completion:
        """The wrapped model's `Completion`, not gated (only streams are)."""
        await asyncio.sleep(0)
        return self.reply(
            messages,
            tools=tools,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            stop=stop,
        )

    async def stream_complete(
        self,
        messages: Messages | Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
        stop: str | Sequence[str] | None = None,
    ) -> AsyncIterator[CompletionDelta]:
        """The wrapped model's deltas, each after the first held at the gate.

        Each delta counts as one token in `tokens_yielded`, the last one (with the
        finish reason and usage) included.
        """
        completion = self.reply(
            messages,
            tools=tools,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            stop=stop,
        )
        # aclosing: when our consumer closes this stream, the gated one closes at once.
        async with contextlib.aclosing(self._gated(completion.deltas())) as items:
            async for delta in items:
                yield delta

    async def _gated(self, items: Sequence[_Item]) -> AsyncIterator[_Item]:
        """Yield `items`, each after the first once the gate lets it through."""
        self.started.set()
        reason: StopReason = "closed"
        try:
            for index, item in enumerate(items):
                if index > 0:
                    await self._pass_gate()
                with self._yielded:
                    self._tokens_yielded += 1
                    self._yielded.notify_all()
                yield item
            reason = "completed"
        except GeneratorExit:
            # The consumer called aclose(), or dropped the stream mid-way.
            reason = "closed"
            raise
        except asyncio.CancelledError:
            # The task running the stream was cancelled, e.g. on client disconnect.
            reason = "cancelled"
            raise
        except TimeoutError:
            reason = "timeout"
            raise
        finally:
            self.stop_reason = reason
            if reason == "completed":
                self.completed.set()
            elif reason in ("closed", "cancelled"):
                self.closed_early.set()
            self.stopped.set()

    async def _pass_gate(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not (self._open.is_set() or self._permits.acquire(blocking=False)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"GatedLM: no token allowed within {self.timeout} s")
            await asyncio.sleep(self.poll)


class ModelError(RuntimeError):
    """A model failed while it was generating (what `FailingLM` raises by default)."""


class FailingLM:
    """A `TinyLM` that fails mid-answer, for testing what a service does then.

    Each stream yields the first `fail_after` tokens of the wrapped model's answer
    (none if it is 0), then raises `error`, or `ModelError` if `error` is None. An
    answer of `fail_after` tokens or fewer completes without an error. `generate`
    returns the whole answer, so a test knows which tokens come before the failure;
    `failures` counts the streams that raised.
    """

    name = "coursekit-failinglm"

    def __init__(
        self, fail_after: int, *, error: Exception | None = None, model: TinyLM | None = None
    ) -> None:
        """Fail after `fail_after` tokens of `model` (the shared zero-delay `TinyLM`)."""
        if fail_after < 0:
            raise ValueError(f"fail_after must not be negative, got {fail_after}")
        self.fail_after = fail_after
        self.error = error
        self.model = model if model is not None else get_model()
        self.failures = 0

    def generate(
        self,
        messages: Messages,
        *,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> list[str]:
        """Return the wrapped model's whole answer (the stream fails part-way through it)."""
        return self.model.generate(
            messages, max_tokens=max_tokens, seed=seed, temperature=temperature
        )

    async def stream_chat(
        self,
        messages: Messages,
        *,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> AsyncIterator[str]:
        """Yield the first `fail_after` tokens, then raise the error."""
        tokens = self.generate(messages, max_tokens=max_tokens, seed=seed, temperature=temperature)
        for token in tokens[: self.fail_after]:
            await asyncio.sleep(0)  # a turn for the event loop, as TinyLM gives
            yield token
        if len(tokens) > self.fail_after:
            self.failures += 1
            raise (
                self.error
                if self.error is not None
                else ModelError(f"{self.name}: failed after {self.fail_after} tokens")
            )


class OpenAIChatModel:
    """The `ChatModel` and `ToolChatModel` interfaces over an OpenAI-compatible async client.

    This is the swap the lessons promise: build it with
    `OpenAIChatModel(AsyncOpenAI(base_url=..., api_key=...), model="...")` and pass
    it wherever a `TinyLM` went. The course never does so (it works offline); the
    class is here to show how little changes.
    """

    def __init__(self, client: Any, model: str) -> None:
        """Use `client` (an `openai.AsyncOpenAI` or compatible) with model `model`."""
        self.client = client
        self.name = model

    async def stream_chat(
        self,
        messages: Messages,
        *,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> AsyncIterator[str]:
        """Yield the text of each streamed chunk, as the server sends it."""
        stream = await self.client.chat.completions.create(
            model=self.name,
            messages=[
                {"role": _field(m, "role"), "content": _field(m, "content")} for m in messages
            ],
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            stream=True,
        )
        try:
            async for chunk in stream:
                # The first and last chunks carry a role or a finish reason, not text.
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        finally:
            # Closing the stream frees the HTTP connection when our consumer stops early.
            await stream.close()

    def _request(
        self,
        messages: Sequence[Any],
        tools: Sequence[ToolSpec] | None,
        max_tokens: int,
        seed: int,
        temperature: float,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.name,
            "messages": [as_message(message) for message in messages],
            "max_tokens": max_tokens,
            "seed": seed,
            "temperature": temperature,
        }
        if tools:  # some servers refuse an empty list
            request["tools"] = list(tools)
        return request

    async def complete(
        self,
        messages: Sequence[Any],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> Completion:
        """The server's next assistant message, in the shapes `TinyLM.complete` returns."""
        response = await self.client.chat.completions.create(
            **self._request(messages, tools, max_tokens, seed, temperature)
        )
        choice = response.choices[0]
        calls = [
            _tool_call(call.id, call.function.name, call.function.arguments)
            for call in choice.message.tool_calls or []
        ]
        message: AssistantMessage = {"role": "assistant", "content": choice.message.content}
        if calls:
            message["tool_calls"] = calls
        usage = response.usage
        return Completion(
            message,
            choice.finish_reason,
            Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(0, 0),
        )

    async def stream_complete(
        self,
        messages: Sequence[Any],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> AsyncIterator[CompletionDelta]:
        """The server's streamed message, as `CompletionDelta`s like `TinyLM`'s.

        Content is passed on as it comes. A tool call is streamed as fragments keyed by
        `index` (its arguments a piece of JSON text at a time), so calls are put
        together and yielded whole, once the server has finished them.
        """
        stream = await self.client.chat.completions.create(
            **self._request(messages, tools, max_tokens, seed, temperature),
            stream=True,
            stream_options={"include_usage": True},
        )
        calls: dict[int, dict[str, str]] = {}
        finish: Any = None
        usage = Usage(0, 0)
        try:
            async for chunk in stream:
                if getattr(chunk, "usage", None):
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                if not chunk.choices:  # the usage chunk has no choice
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                delta = choice.delta
                if delta.content:
                    yield CompletionDelta(content=delta.content)
                for piece in getattr(delta, "tool_calls", None) or []:
                    call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = piece.id or call["id"]
                    if piece.function is not None:
                        call["name"] += piece.function.name or ""
                        call["arguments"] += piece.function.arguments or ""
        finally:
            await stream.close()
        if calls:
            yield CompletionDelta(
                tool_calls=[
                    _tool_call(call["id"], call["name"], call["arguments"])
                    for _, call in sorted(calls.items())
                ]
            )
        yield CompletionDelta(finish_reason=finish, usage=usage)


# --- Tool calling and token counting ------------------------------------------------
#
# The chat shapes below are OpenAI's, as every OpenAI-compatible server (vLLM,
# llama.cpp, Ollama) takes and returns them: an assistant message may carry
# `tool_calls` instead of text, and each call is answered by one `tool` message whose
# `tool_call_id` names it. `TinyLM.complete` answers in those shapes, so a service
# written against them works with a real server too.


class ToolFunction(TypedDict):
    """Which function a tool call runs, and its arguments as a JSON text."""

    name: str
    # A string, not an object: the model writes JSON, and it may be invalid JSON.
    arguments: str


class ToolCall(TypedDict):
    """One call the model asks for: `{"id", "type": "function", "function"}`."""

    id: str
    type: Literal["function"]
    function: ToolFunction


class AssistantMessage(TypedDict):
    """The model's message: text in `content`, or `tool_calls` (and `content` None)."""

    role: Literal["assistant"]
    content: str | None
    tool_calls: NotRequired[list[ToolCall]]


class ToolMessage(TypedDict):
    """A tool's result (or error), answering the call whose id is `tool_call_id`."""

    role: Literal["tool"]
    tool_call_id: str
    content: str


class FunctionSpec(TypedDict):
    """What a model is told about a tool: its name, what it does, its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]  # a JSON schema of an object, one property per argument


class ToolSpec(TypedDict):
    """One entry of the `tools` list a chat model is given, in OpenAI's shape."""

    type: Literal["function"]
    function: FunctionSpec


FinishReason: TypeAlias = Literal["stop", "length", "tool_calls"]

# Chat formats wrap every message in a few marker tokens (its role, a separator, an end
# marker), so a message costs more than its text. This model counts three.
MESSAGE_OVERHEAD = 3


def count_tokens(text: str) -> int:
    """How many tokens `text` is for the course's model: its words.

    A word is a maximal run of non-whitespace characters, the unit `TinyLM` reads and
    writes (see "Tokens" above): `count_tokens("Refund me, please.")` is 3.
    """
    return len(text.split())


def as_message(message: Any) -> dict[str, Any]:
    """`message` as a plain dict in OpenAI's shape, whatever it was given as.

    Accepts a dict, a Pydantic model (its `model_dump()`) or any object with `role`
    and `content` attributes. Keys whose value is None are dropped, except `content`
    of an assistant message (None beside `tool_calls`); `tool_calls: []` is dropped.
    """
    if isinstance(message, Mapping):
        data = dict(message)
    elif hasattr(message, "model_dump"):
        data = message.model_dump()
    else:
        data = {
            name: getattr(message, name)
            for name in ("role", "content", "tool_calls", "tool_call_id")
            if hasattr(message, name)
        }
    if not data.get("tool_calls"):
        data.pop("tool_calls", None)
    else:
        data["tool_calls"] = [
            call if isinstance(call, Mapping) else _plain(call) for call in data["tool_calls"]
        ]
    return {
        key: value
        for key, value in data.items()
        if value is not None or (key == "content" and data.get("role") == "assistant")
    }


def _plain(value: Any) -> Any:
    """A Pydantic model (or anything with model_dump) as plain data."""
    return value.model_dump() if hasattr(value, "model_dump") else value


def message_tokens(message: Any) -> int:
    """What one message costs: `MESSAGE_OVERHEAD` plus the tokens of its text.

    The text is the content, and for each tool call its function's name and its
    arguments (as written, a JSON text). A `tool` message's id costs nothing.
    """
    data = as_message(message)
    tokens = MESSAGE_OVERHEAD + count_tokens(data.get("content") or "")
    for call in data.get("tool_calls", []):
        function = call["function"]
        tokens += count_tokens(function["name"]) + count_tokens(function["arguments"])
    return tokens


def prompt_tokens(messages: Sequence[Any]) -> int:
    """What a whole conversation costs: the sum of `message_tokens` of its messages."""
    return sum(message_tokens(message) for message in messages)


@dataclass(frozen=True)
class Usage:
    """Tokens one model call read (`prompt_tokens`) and wrote (`completion_tokens`)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """Both together: what a hosted model bills."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        """`{"prompt_tokens", "completion_tokens", "total_tokens"}`, as OpenAI reports it."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class CompletionDelta:
    """One piece of a streamed completion, like one `chat.completion.chunk`.

    A stream is: either content deltas (one per token) or one delta with every
    `tool_calls` entry whole; then a last delta with `finish_reason` and `usage`.
    """

    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class Completion:
    """The model's answer to one call: its message, why it stopped, what it cost."""

    message: AssistantMessage
    finish_reason: FinishReason
    usage: Usage
    tokens: tuple[str, ...] = ()  # the content's tokens, as a stream sends them

    def deltas(self) -> list[CompletionDelta]:
        """This completion as the deltas a stream yields."""
        if "tool_calls" in self.message:
            pieces = [CompletionDelta(tool_calls=list(self.message["tool_calls"]))]
        else:
            pieces = [CompletionDelta(content=token) for token in self.tokens]
        return [*pieces, CompletionDelta(finish_reason=self.finish_reason, usage=self.usage)]


def text_completion(
    messages: Sequence[Any], tokens: Sequence[str], finish: FinishReason
) -> Completion:
    """A text answer made of `tokens`, with its usage counted for `messages`."""
    content = "".join(tokens)
    message: AssistantMessage = {"role": "assistant", "content": content}
    usage = Usage(prompt_tokens(messages), message_tokens(message) - MESSAGE_OVERHEAD)
    return Completion(message, finish, usage, tuple(tokens))


def tool_call_completion(messages: Sequence[Any], calls: Sequence[ToolCall]) -> Completion:
    """An answer that asks for `calls`, with its usage counted for `messages`."""
    message: AssistantMessage = {"role": "assistant", "content": None, "tool_calls": list(calls)}
    usage = Usage(prompt_tokens(messages), message_tokens(message) - MESSAGE_OVERHEAD)
    return Completion(message, "tool_calls", usage)


class ConversationError(ValueError):
    """A conversation OpenAI's API refuses (it answers 400)."""


_ROLES = ("system", "user", "assistant", "tool")


def check_conversation(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Check `messages` as OpenAI's API does; return them as plain dicts.

    Raises `ConversationError` saying what is wrong when:
    - there is no message, or a message has an unknown role or a missing field;
    - `content` is not a string (it may be None only for an assistant message with
      tool calls);
    - a tool call is not `{"id", "type": "function", "function": {"name", "arguments"}}`
      with string values, or two calls share an id;
    - a `tool` message does not answer a call of the assistant message right before the
      run of `tool` messages it belongs to, or answers one twice;
    - an assistant message's tool calls are not all answered before the next message
      that is not a `tool` message (a last, unanswered one is allowed: the caller is
      about to run it).
    """
    if not messages:
        raise ConversationError("the conversation has no message")
    plain = [as_message(message) for message in messages]
    seen_ids: set[str] = set()
    pending: set[str] | None = None  # ids of the last assistant message's unanswered calls
    for index, message in enumerate(plain):
        where = f"message {index}"
        role = message.get("role")
        if role not in _ROLES:
            raise ConversationError(f"{where}: unknown role {role!r}")
        if role != "tool" and pending:
            raise ConversationError(
                f"{where}: the tool calls {sorted(pending)} of the assistant message before "
                "it were not all answered by tool messages"
            )
        if role != "tool":
            pending = None
        content = message.get("content")
        calls = message.get("tool_calls", [])
        if role == "assistant":
            if content is None and not calls:
                raise ConversationError(
                    f"{where}: an assistant message needs content or tool_calls"
                )
            if not isinstance(calls, list):
                raise ConversationError(f"{where}: tool_calls must be a list")
            for call in calls:
                _check_tool_call(call, where, seen_ids)
            pending = {call["id"] for call in calls} if calls else None
        elif calls:
            raise ConversationError(f"{where}: only an assistant message may carry tool_calls")
        if content is not None and not isinstance(content, str):
            raise ConversationError(f"{where}: content must be a string, got {content!r}")
        if content is None and role != "assistant":
            raise ConversationError(f"{where}: a {role} message needs a string content")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise ConversationError(f"{where}: a tool message needs a string tool_call_id")
            if pending is None or call_id not in pending:
                raise ConversationError(
                    f"{where}: the tool message answers {call_id!r}, which is not an "
                    "unanswered call of the assistant message right before it"
                )
            pending.discard(call_id)
    return plain


def _check_tool_call(call: Any, where: str, seen_ids: set[str]) -> None:
    if not isinstance(call, Mapping):
        raise ConversationError(f"{where}: a tool call must be an object, got {call!r}")
    function = call.get("function")
    if (
        not isinstance(call.get("id"), str)
        or not call["id"]
        or call.get("type") != "function"
        or not isinstance(function, Mapping)
        or not isinstance(function.get("name"), str)
        or not isinstance(function.get("arguments"), str)
    ):
        raise ConversationError(
            f"{where}: a tool call must be {{'id': str, 'type': 'function', 'function': "
            f"{{'name': str, 'arguments': str}}}} (arguments a JSON text), got {call!r}"
        )
    if call["id"] in seen_ids:
        raise ConversationError(f"{where}: the tool call id {call['id']!r} is used twice")
    seen_ids.add(call["id"])


def _tool_name_pattern(name: str) -> re.Pattern[str]:
    # The name as a whole word, whatever the case: "count_words" in "Count_words: hi".
    return re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])", re.IGNORECASE)


def _arguments_from_text(parameters: Mapping[str, Any], text: str) -> dict[str, Any]:
    """Fill a tool's arguments from the words after its name, as a small model might.

    The first string property gets the text (without leading punctuation), integer and
    number properties the numbers of the text, in order. Properties it cannot fill are
    left out: the arguments may then fail the tool's validation, as a real model's do.
    """
    text = text.strip().lstrip(":,-").strip()
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text)
    arguments: dict[str, Any] = {}
    text_used = False
    for name, schema in parameters.get("properties", {}).items():
        kind = schema.get("type") if isinstance(schema, Mapping) else None
        if kind == "string" and "enum" in schema:
            choices = [
                c for c in schema["enum"] if re.search(rf"(?<!\w){re.escape(c)}(?!\w)", text)
            ]
            if choices:
                arguments[name] = choices[0]
        elif kind == "string" and not text_used and text:
            arguments[name] = text
            text_used = True
        elif kind in ("integer", "number") and numbers:
            number = numbers.pop(0)
            arguments[name] = float(number) if kind == "number" or "." in number else int(number)
    return arguments


def _planned_tool_calls(
    conversation: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec], seed: int
) -> list[ToolCall]:
    """The calls TinyLM makes: each tool named in the last message, if a user wrote it."""
    last = conversation[-1]
    if last.get("role") != "user" or not tools:
        return []
    text = last.get("content") or ""
    found = []
    for spec in tools:
        function = spec["function"]
        match = _tool_name_pattern(function["name"]).search(text)
        if match:
            found.append((match.start(), match.end(), function))
    found.sort(key=lambda item: item[0])
    calls: list[ToolCall] = []
    for index, (_, end, function) in enumerate(found):
        following = found[index + 1][0] if index + 1 < len(found) else len(text)
        arguments = _arguments_from_text(function.get("parameters", {}), text[end:following])
        # The id depends only on the conversation, the seed and the call's place in it,
        # so the same conversation always gets the same ids, and each call its own.
        key = f"{seed}|{len(conversation)}|{index}|{function['name']}|{text}"
        call_id = "call_" + hashlib.sha256(key.encode()).hexdigest()[:24]
        calls.append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": function["name"], "arguments": json.dumps(arguments)},
            }
        )
    return calls


def _tool_results_since_last_user(conversation: Sequence[Mapping[str, Any]]) -> list[str]:
    results: list[str] = []
    for message in reversed(conversation):
        if message.get("role") == "user":
            break
        if message.get("role") == "tool":
            results.append(str(message.get("content", "")))
    return list(reversed(results))


def _tiny_completion(
    model: TinyLM,
    messages: Sequence[Any],
    tools: Sequence[ToolSpec] | None,
    max_tokens: int,
    seed: int,
    temperature: float,
    stop: str | Sequence[str] | None = None,
) -> Completion:
    """TinyLM's policy: call the tools the user named; otherwise write text.

    After tool results, the answer repeats them first (the model "read" them), then
    goes on as `generate` would for the last user message, up to `max_tokens` tokens.
    A text answer that contains one of the `stop` sequences is cut just before the
    first of them (see `cut_at_stop`) and ends with finish_reason "stop".
    """
    _check_parameters(max_tokens, temperature)
    conversation = check_conversation(messages)
    # Tools as plain dicts, whether given as dicts or as Pydantic models of their shape.
    specs = [_plain(tool) for tool in tools or ()]
    calls = _planned_tool_calls(conversation, specs, seed)
    if calls:
        return tool_call_completion(conversation, calls)
    quoted = " ".join(_tool_results_since_last_user(conversation)).split()
    generated = model.generate(
        conversation, max_tokens=max_tokens, seed=seed, temperature=temperature
    )
    words = [*quoted, *(token.strip() for token in generated)][:max_tokens]
    tokens = [words[0], *(" " + word for word in words[1:])]
    cut = cut_at_stop(tokens, stop)
    if cut is not None:
        return text_completion(conversation, cut, "stop")
    # TinyLM has no end-of-text token: without a stop sequence, it stops at max_tokens.
    return text_completion(conversation, tokens, "length")


def cut_at_stop(tokens: Sequence[str], stop: str | Sequence[str] | None) -> list[str] | None:
    """The tokens up to the first stop sequence in their text; None if none occurs.

    As OpenAI's API does, the text ends just before the earliest occurrence of any of
    the `stop` strings (a string is one sequence), and the stop sequence itself is
    not returned. A token that the cut falls inside is shortened; a token left empty
    is dropped. Empty stop strings are ignored.
    """
    sequences = [stop] if isinstance(stop, str) else list(stop or ())
    text = "".join(tokens)
    found = [text.find(sequence) for sequence in sequences if sequence]
    found = [index for index in found if index >= 0]
    if not found:
        return None
    end = min(found)
    cut: list[str] = []
    position = 0
    for token in tokens:
        if position >= end:
            break
        piece = token[: end - position]
        if piece:
            cut.append(piece)
        position += len(token)
    return cut


class ToolChatModel(Protocol):
    """A chat model that can call tools: messages in, the assistant's next message out.

    `TinyLM`, `ScriptedLM` and `OpenAIChatModel` satisfy it. `complete` returns the
    whole `Completion`; `stream_complete` yields it as `CompletionDelta`s.
    """

    async def complete(
        self,
        messages: Sequence[Any],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> Completion:
        """The assistant's next message."""
        ...

    def stream_complete(
        self,
        messages: Sequence[Any],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> AsyncIterator[CompletionDelta]:
        """The assistant's next message, piece by piece."""
        ...


ScriptedTurn: TypeAlias = str | Sequence[tuple[str, Mapping[str, Any] | str]]


@dataclass(frozen=True)
class ScriptedCall:
    """What one call of a `ScriptedLM` was given (messages as plain dicts)."""

    messages: list[dict[str, Any]]
    tools: list[ToolSpec]
    max_tokens: int
    seed: int


class ScriptedLM:
    """A tool-calling chat model that follows a script: a test double.

        model = ScriptedLM([("count_words", {"text": "a b c"})], "Done.")

    Each call answers with the next turn of the script: a string is a text answer (its
    words are its tokens), a list of `(name, arguments)` is a message with those tool
    calls (arguments as a dict, written as JSON, or as a string, sent as it is: a
    model's invalid JSON). After the last turn, the last turn repeats, so
    `ScriptedLM([("count_words", {...})])` asks for tools for ever. Call ids are
    `call_1`, `call_2`, ... in the order made.

    Every call is recorded in `calls` (copies of the messages and tools it was given)
    before its conversation is checked, as a server would, with `check_conversation`.
    """

    name = "coursekit-scriptedlm"

    def __init__(self, *turns: ScriptedTurn) -> None:
        """Answer with `turns`, in order, then repeat the last one."""
        if not turns:
            raise ValueError("a script needs at least one turn")
        self.turns = turns
        self.calls: list[ScriptedCall] = []
        self._ids = 0

    def _answer(
        self, messages: Sequence[Any], tools: Sequence[ToolSpec] | None, max_tokens: int, seed: int
    ) -> Completion:
        _check_parameters(max_tokens, 1.0)
        plain = [as_message(message) for message in messages]
        self.calls.append(
            ScriptedCall(json.loads(json.dumps(plain)), list(tools or ()), max_tokens, seed)
        )
        check_conversation(plain)
        turn = self.turns[min(len(self.calls), len(self.turns)) - 1]
        if isinstance(turn, str):
            words = turn.split()
            tokens = [words[0], *(" " + word for word in words[1:])] if words else []
            return text_completion(plain, tokens, "stop")
        calls: list[ToolCall] = []
        for name, arguments in turn:
            self._ids += 1
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            calls.append(
                {
                    "id": f"call_{self._ids}",
                    "type": "function",
                    "function": {"name": name, "arguments": text},
                }
            )
        return tool_call_completion(plain, calls)

    async def complete(
        self,
        messages: Sequence[Any],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> Completion:
        """The next turn of the script, as a `Completion`."""
        return self._answer(messages, tools, max_tokens, seed)

    async def stream_complete(
        self,
        messages: Sequence[Any],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int = 32,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> AsyncIterator[CompletionDelta]:
        """The next turn of the script, as deltas."""
        for delta in self._answer(messages, tools, max_tokens, seed).deltas():
            await asyncio.sleep(0)
            yield delta


def _tool_call(call_id: str, name: str, arguments: str) -> ToolCall:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
