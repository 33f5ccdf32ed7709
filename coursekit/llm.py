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
    exactly `max_tokens` tokens. For a given (last user message, seed, max_tokens,
    temperature) the tokens are always the same, and a shorter answer is a prefix
    of a longer one with the same seed and temperature.

Test double
    `GatedLM` streams the same tokens but holds each token after the first until a
    test lets it through, from any thread, and records whether the consumer stopped
    the stream early (a client that disconnected).

    `FailingLM` streams the same tokens and then fails mid-answer: it yields the first
    `fail_after` tokens and raises an error (`ModelError` unless told otherwise), as a
    real model server does when it crashes or drops the connection after the response
    has started.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, Protocol, TypeAlias, TypeVar

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


@cache
def get_model(delay: float = 0.0) -> TinyLM:
    """The shared `TinyLM` for this `delay` (the corpus is parsed once per process)."""
    return TinyLM(delay=delay)


StopReason: TypeAlias = Literal["completed", "closed", "cancelled", "timeout"]


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
        self.started.set()
        reason: StopReason = "closed"
        try:
            for index, token in enumerate(tokens):
                if index > 0:
                    await self._pass_gate()
                with self._yielded:
                    self._tokens_yielded += 1
                    self._yielded.notify_all()
                yield token
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
    """The `ChatModel` interface over an OpenAI-compatible async client.

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
