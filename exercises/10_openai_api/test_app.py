"""Graded tests for step 10. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/10_openai_api`. Points and hints live in course.toml.
Your app runs under a real uvicorn server on loopback, a fresh one for each test: `served`
(the grader's `app_url`), or `lent(app_server, ...)` for a test that needs other models,
which keeps them in the test's process and lends them to your app (`coursekit.model_link`):
your registry (`service.get_registry`) then serves them. Most tests talk to your app
with the official `openai` client, its strict response validation on: a field missing or
of the wrong type in your answer raises in the client, as it would in any application
that uses it. Some read the raw HTTP, for the parts of the wire format the client
forgives. `coursekit.llm.GatedLM` lets a test hold every token after the first, so
streaming and disconnects are checked by what the model did, never by a stopwatch.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import importlib
import importlib.util
import json
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from autograder.expect import OutOfTime, expect_equal, expect_exact_keys, expect_status, shown
from autograder.sse import parse_sse
from coursekit.embeddings import embed
from coursekit.llm import GatedLM, count_tokens, get_model, prompt_tokens
from coursekit.model_lending import lend_registry
from coursekit.model_link import REGISTRY_ENV

KEY = "key-step-10"
CHAT = "coursekit-tinylm"
EMBEDDER = "coursekit-embedder"
READ_TIMEOUT = 10.0  # seconds the client waits for an answer (a correct one takes far less)
GATE_TIMEOUT = 5.0  # seconds a held model waits for the test before it gives up
QUESTION = [
    {"role": "system", "content": "You answer questions about serving models."},
    {"role": "user", "content": "How do I serve a model behind an API?"},
]
COUNT_WORDS = {
    "type": "function",
    "function": {
        "name": "count_words",
        "description": "Count the words of a text.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
}
ASKS_FOR_A_TOOL = [{"role": "user", "content": "count_words: the parcel never arrived"}]


@dataclass
class Served:
    """Your app under uvicorn, and the means to talk to it."""

    base_url: str
    http: httpx2.Client

    def client(self, key: str = KEY, strict: bool = True) -> openai.OpenAI:
        """The official client on your server (no retries: one request per call)."""
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1",
            api_key=key,
            max_retries=0,
            timeout=READ_TIMEOUT,
            http_client=self.http,
            _strict_response_validation=strict,
        )

    def post(self, path: str, body: Any, key: str = KEY) -> httpx2.Response:
        return self.http.post(path, json=body, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def app_settings() -> tuple[str, dict[str, Any]]:
    """What the grader's `app_url` makes service.get_settings answer: Settings(api_key=KEY)."""
    return ("service", {"api_key": KEY})


@pytest.fixture
def app_overrides() -> list[tuple[str, str]]:
    """Your service.get_registry answers the models a test lends (`lent`), else the
    registry of your lifespan, as the given get_registry does."""
    return [("service:get_registry", "coursekit.model_link:linked_registry")]


@pytest.fixture
def served(app_url: str) -> Iterator[Served]:
    """Your app, fresh, under a uvicorn server of this test's own (the grader's `app_url`)."""
    with httpx2.Client(base_url=app_url, timeout=READ_TIMEOUT) as http:
        yield Served(app_url, http)


@contextlib.contextmanager
def lent(
    app_server: Callable[..., Any], chat: dict[str, Any], embedders: dict[str, Any] | None = None
) -> Iterator[Served]:
    """Your app, fresh, under a uvicorn server of this test's own (the grader's
    `app_server`), its registry serving these models, which stay in the test's process."""
    with (
        lend_registry(chat, embedders or {}, created=1_700_000_000, owned_by="the-tests") as table,
        app_server({REGISTRY_ENV: table}) as base_url,
        httpx2.Client(base_url=base_url, timeout=READ_TIMEOUT) as http,
    ):
        yield Served(base_url, http)


@functools.cache
def given_schemas() -> Any:
    """This folder's openai_schemas.py (given: the same as yours), for its limits."""
    path = Path(__file__).with_name("openai_schemas.py")
    spec = importlib.util.spec_from_file_location("given_openai_schemas_10", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_reply(messages: list[dict[str, Any]], **options: Any) -> Any:
    """What the course's model answers (the solution's route passes these options on)."""
    return get_model().reply(messages, **options)


def raw_stream(
    served: Served, body: dict[str, Any]
) -> tuple[httpx2.Response, list[dict[str, str]]]:
    """POST a streaming request; the response and its events (parse_sse)."""
    response = served.post("/v1/chat/completions", {**body, "stream": True})
    return response, parse_sse(response.text)


def chunks_of(events: list[dict[str, str]], what: str) -> list[dict[str, Any]]:
    """The JSON chunks of a stream that ends with `data: [DONE]`."""
    if not events or events[-1].get("data") != "[DONE]":
        last = events[-1] if events else None
        raise AssertionError(
            f"{what}: the last event must be `data: [DONE]`, got {shown(last)}. Every stream "
            "ends with it: the client stops reading there."
        )
    chunks = []
    for event in events[:-1]:
        try:
            chunks.append(json.loads(event.get("data", "")))
        except json.JSONDecodeError:
            raise AssertionError(
                f"{what}: every event before [DONE] must carry one JSON chunk as its data; "
                f"got {shown(event)}."
            ) from None
    return chunks


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [choice["delta"] for chunk in chunks for choice in chunk.get("choices", [])]


def expect_openai_error(error: openai.APIStatusError, status: int, what: str) -> dict[str, Any]:
    """The error's body is OpenAI's `{"error": {message, type, param, code}}`."""
    expect_equal(error.status_code, status, f"the status of {what}")
    body = json_of(error.response, what)
    expect_exact_keys(body, ["error"], f"the body of {what}")
    expect_exact_keys(body["error"], ["message", "type", "param", "code"], f"the error of {what}")
    if not isinstance(body["error"]["message"], str) or not body["error"]["message"]:
        raise AssertionError(f"{what}: the error's message must be a non-empty text.")
    return body["error"]


def json_of(response: httpx2.Response, what: str) -> Any:
    """The JSON body of an answer; an AssertionError that shows it if it is not JSON."""
    try:
        return response.json()
    except ValueError:
        raise AssertionError(
            f"{what}: the body must be JSON, OpenAI's error object; got "
            f"{shown_text(response.text)}."
        ) from None


def expect_raises(kind: type[openai.APIStatusError], call: Any, what: str) -> Any:
    """`call()` must make the client raise `kind` (the client's own exception types)."""
    try:
        result = call()
    except kind as error:
        return error
    except openai.APIStatusError as error:
        raise AssertionError(
            f"{what}: the client raised {type(error).__name__} (status {error.status_code}, "
            f"body {shown_text(error.response.text)}); expected {kind.__name__}."
        ) from None
    raise AssertionError(f"{what}: expected {kind.__name__}, but it succeeded: {shown(result)}.")


def shown_text(text: str) -> str:
    return shown(text[:300])


def create(client: openai.OpenAI, what: str, **body: Any) -> Any:
    """`client.chat.completions.create(...)`, a validation failure told as a learner's error."""
    try:
        return client.chat.completions.create(**body)
    except openai.APIResponseValidationError as error:
        raise AssertionError(
            f"{what}: the client's strict validation refused your answer {shown(error.body)}"
            f" ({error.__cause__}). Compare it with the ChatCompletion model of openai_schemas."
        ) from None
    except openai.APIStatusError as error:
        raise AssertionError(
            f"{what}: expected 200, got {error.status_code} with {shown_text(error.response.text)}."
        ) from None


def graded(test: Callable[..., None]) -> Callable[..., None]:
    """Tell an unexpected error answer, or a broken stream, as what the test saw.

    The client raises its own exceptions; as an AssertionError, a failure caused by a 500
    also names the line of your code that raised (the grader notes it).
    """

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            test(*args, **kwargs)
        except openai.APIStatusError as error:
            request = error.response.request
            raise AssertionError(
                f"{request.method} {request.url.path} answered {error.status_code} with "
                f"{shown_text(error.response.text)}, where the test expected a success."
            ) from None
        except (openai.APIConnectionError, httpx2.HTTPError) as error:
            raise AssertionError(
                f"The connection to your server broke ({type(error).__name__}: {error}). A "
                "stream whose generator raises after its 200 ends like this."
            ) from None

    return run


# --- Non-streaming completions ------------------------------------------------------------


@graded
def test_a_completion_parses_with_strict_validation(served: Served) -> None:
    client = served.client()
    answer = create(client, "a plain completion", model=CHAT, messages=QUESTION, seed=3)
    expected = expected_reply(QUESTION, seed=3, max_tokens=16)
    expect_equal(answer.object, "chat.completion", "object")
    expect_equal(answer.model, CHAT, "model (the id the request named)")
    if not answer.id:
        raise AssertionError("The completion's id must be a non-empty text.")
    if abs(answer.created - time.time()) > 3600:
        raise AssertionError(
            f"created must be the Unix time of the answer, in seconds; got {answer.created}."
        )
    expect_equal(len(answer.choices), 1, "the number of choices")
    choice = answer.choices[0]
    expect_equal(choice.index, 0, "choices[0].index")
    expect_equal(choice.message.role, "assistant", "the message's role")
    expect_equal(choice.message.content, expected.message["content"], "the answer for seed 3")
    expect_equal(choice.finish_reason, "length", "finish_reason of an answer cut at max tokens")


@graded
def test_max_completion_tokens_and_the_older_max_tokens_bound_the_answer(served: Served) -> None:
    client = served.client()
    cases = [
        ({"max_completion_tokens": 5}, 5),
        ({"max_tokens": 3}, 3),
        ({"max_completion_tokens": 4, "max_tokens": 9}, 4),
        ({}, 16),
    ]
    for limits, tokens in cases:
        answer = create(
            client, f"a completion with {limits}", model=CHAT, messages=QUESTION, **limits
        )
        expected = expected_reply(QUESTION, max_tokens=tokens)
        expect_equal(
            answer.choices[0].message.content,
            expected.message["content"],
            f"the answer with {shown(limits)} ({tokens} tokens)",
        )


@graded
def test_seed_temperature_and_stop_reach_the_model(served: Served) -> None:
    client = served.client()
    options = {"seed": 11, "temperature": 0.5}
    answer = create(
        client, "seed 11", model=CHAT, messages=QUESTION, max_completion_tokens=12, **options
    )
    whole = expected_reply(QUESTION, max_tokens=12, **options)
    expect_equal(
        answer.choices[0].message.content, whole.message["content"], f"the answer with {options}"
    )
    # A stop sequence from the middle of that answer: the text ends just before it.
    stop = whole.message["content"].split(" ")[4]
    answer = create(
        client,
        "a stop sequence",
        model=CHAT,
        messages=QUESTION,
        max_completion_tokens=12,
        stop=[stop],
        **options,
    )
    cut = expected_reply(QUESTION, max_tokens=12, stop=[stop], **options)
    expect_equal(
        answer.choices[0].message.content, cut.message["content"], f"the answer with stop={[stop]}"
    )
    expect_equal(
        answer.choices[0].finish_reason, "stop", "finish_reason when a stop sequence ended it"
    )


@graded
def test_usage_adds_up(served: Served) -> None:
    answer = create(
        served.client(), "usage", model=CHAT, messages=QUESTION, max_completion_tokens=7
    )
    content = answer.choices[0].message.content or ""
    usage = answer.usage
    expect_equal(
        usage.prompt_tokens,
        prompt_tokens(QUESTION),
        "usage.prompt_tokens (coursekit.llm.prompt_tokens)",
    )
    expect_equal(
        usage.completion_tokens,
        count_tokens(content),
        "usage.completion_tokens (the answer's words)",
    )
    expect_equal(
        usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, "usage.total_tokens"
    )


@graded
def test_a_tool_call_comes_back_as_tool_calls(served: Served) -> None:
    client = served.client()
    answer = create(
        client, "a request with tools", model=CHAT, messages=ASKS_FOR_A_TOOL, tools=[COUNT_WORDS]
    )
    expected = expected_reply(ASKS_FOR_A_TOOL, tools=[COUNT_WORDS], max_tokens=16).message[
        "tool_calls"
    ]
    choice = answer.choices[0]
    expect_equal(choice.finish_reason, "tool_calls", "finish_reason when the model calls a tool")
    got = [
        call.model_dump(include={"id", "type", "function"})
        for call in choice.message.tool_calls or []
    ]
    expect_equal(got, expected, "message.tool_calls")
    # The client sends the call and its result back: the model reads the result.
    history = [
        *ASKS_FOR_A_TOOL,
        {"role": "assistant", "content": None, "tool_calls": expected},
        {"role": "tool", "tool_call_id": expected[0]["id"], "content": '{"words": 4}'},
    ]
    answer = create(
        client,
        "a conversation with a tool result",
        model=CHAT,
        messages=history,
        tools=[COUNT_WORDS],
    )
    reply = expected_reply(history, tools=[COUNT_WORDS], max_tokens=16).message["content"]
    expect_equal(answer.choices[0].message.content, reply, "the answer after the tool's result")
    # tool_choice "none": the model may not call a tool.
    answer = create(
        client,
        'tool_choice "none"',
        model=CHAT,
        messages=ASKS_FOR_A_TOOL,
        tools=[COUNT_WORDS],
        tool_choice="none",
    )
    expect_equal(answer.choices[0].message.tool_calls, None, 'tool_calls with tool_choice "none"')


# --- Streaming ------------------------------------------------------------------------------


@graded
def test_a_stream_parses_and_its_content_equals_the_completion(served: Served) -> None:
    client = served.client()
    body: dict[str, Any] = {"model": CHAT, "messages": QUESTION, "seed": 5}
    body |= {"max_completion_tokens": 9, "temperature": 0.7}
    # A stop sequence too: the stream must end where the plain answer ends.
    stop = expected_reply(QUESTION, max_tokens=9, seed=5, temperature=0.7).tokens[6]
    body["stop"] = [stop.strip()[1:] or stop]
    whole = create(client, "the same request, not streamed", **body)
    pieces: list[str] = []
    finishes: list[str] = []
    try:
        for chunk in client.chat.completions.create(**body, stream=True):
            expect_equal(chunk.object, "chat.completion.chunk", "object of each chunk")
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finishes += [choice.finish_reason] if choice.finish_reason else []
    except openai.APIResponseValidationError as error:
        raise AssertionError(
            f"The client's strict validation refused a chunk {shown(error.body)}: compare it with "
            "ChatCompletionChunk in openai_schemas."
        ) from None
    expect_equal(
        "".join(pieces),
        whole.choices[0].message.content,
        f"the streamed content joined, for {body}",
    )
    expect_equal(finishes, [whole.choices[0].finish_reason], "the stream's finish_reason")


@graded
def test_the_stream_wire_format(served: Served) -> None:
    body = {"model": CHAT, "messages": QUESTION, "max_completion_tokens": 6}
    response, events = raw_stream(served, body)
    expect_status(response, 200)
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    expect_equal(media_type, "text/event-stream", "the stream's content type")
    for event in events:
        extra = sorted(set(event) - {"data"})
        if extra:
            raise AssertionError(
                f"Every event of the stream is `data: ...` only; this one also has {extra}: "
                f"{shown(event)}."
            )
    chunks = chunks_of(events, "the stream")
    ids = {chunk.get("id") for chunk in chunks}
    expect_equal(len(ids), 1, f"different ids among the chunks ({shown(sorted(map(str, ids)))})")
    got = deltas(chunks)
    roles = [delta.get("role") for delta in got]
    if not roles or roles[0] != "assistant" or any(role is not None for role in roles[1:]):
        raise AssertionError(
            'The first delta, and only it, carries role "assistant"; the roles were '
            f"{shown(roles)}."
        )
    finishes = [c.get("finish_reason") for chunk in chunks for c in chunk.get("choices", [])]
    finishes = [reason for reason in finishes if reason is not None]
    expect_equal(finishes, ["length"], "the finish_reasons of the stream (exactly one)")
    usages = [chunk.get("usage") for chunk in chunks if chunk.get("usage") is not None]
    expect_equal(usages, [], "usage in a stream that did not ask for it")


@graded
def test_include_usage_adds_one_usage_chunk_before_done(served: Served) -> None:
    body = {"model": CHAT, "messages": QUESTION, "max_completion_tokens": 6}
    response, events = raw_stream(served, {**body, "stream_options": {"include_usage": True}})
    expect_status(response, 200)
    chunks = chunks_of(events, "the stream with include_usage")
    with_usage = [index for index, chunk in enumerate(chunks) if chunk.get("usage") is not None]
    expect_equal(
        with_usage, [len(chunks) - 1], "which chunks carry usage (only the last before [DONE])"
    )
    last = chunks[-1]
    expect_equal(last.get("choices"), [], "the choices of the usage chunk")
    content = "".join(delta.get("content") or "" for delta in deltas(chunks))
    expect_equal(
        last["usage"],
        {
            "prompt_tokens": prompt_tokens(QUESTION),
            "completion_tokens": count_tokens(content),
            "total_tokens": prompt_tokens(QUESTION) + count_tokens(content),
        },
        "the usage chunk",
    )


@graded
def test_streamed_tool_calls_reassemble_in_the_client(served: Served) -> None:
    client = served.client()
    expected = expected_reply(ASKS_FOR_A_TOOL, tools=[COUNT_WORDS], max_tokens=16).message[
        "tool_calls"
    ]
    try:
        with client.chat.completions.stream(
            model=CHAT, messages=ASKS_FOR_A_TOOL, tools=[COUNT_WORDS]
        ) as stream:
            for _ in stream:
                pass
            final = stream.get_final_completion()
    except (openai.APIResponseValidationError, AssertionError, KeyError, TypeError) as error:
        raise AssertionError(
            "The client's stream accumulator (client.chat.completions.stream) could not put your "
            f"tool-call deltas together ({type(error).__name__}: {error}). Each piece names its "
            "call by index; send a chunk without its null fields (a null id or type overwrites "
            "the call's own)."
        ) from None
    calls = [
        call.model_dump(include={"id", "type", "function"})
        for call in final.choices[0].message.tool_calls or []
    ]
    for call in calls:
        call["function"] = {key: call["function"][key] for key in ("name", "arguments")}
    expect_equal(calls, expected, "the tool calls the client put together from the stream")
    expect_equal(final.choices[0].finish_reason, "tool_calls", "the stream's finish_reason")
    _, events = raw_stream(
        served, {"model": CHAT, "messages": ASKS_FOR_A_TOOL, "tools": [COUNT_WORDS]}
    )
    first_pieces: dict[int, dict[str, Any]] = {}
    for delta in deltas(chunks_of(events, "the stream with a tool call")):
        for piece in delta.get("tool_calls") or []:
            first_pieces.setdefault(piece.get("index"), piece)
    for index, piece in first_pieces.items():
        function = piece.get("function") or {}
        if not piece.get("id") or piece.get("type") != "function" or not function.get("name"):
            raise AssertionError(
                f'The first delta of tool call {index} must carry its id, type "function" and '
                f"the function's name (the arguments may follow in pieces); got {shown(piece)}."
            )


@graded
def test_chunks_are_sent_as_the_model_makes_them(app_server: Any) -> None:
    gated = GatedLM(timeout=GATE_TIMEOUT)
    body = {"model": CHAT, "messages": QUESTION, "max_completion_tokens": 6, "stream": True}
    first_token = expected_reply(QUESTION, max_tokens=6).tokens[0]
    with (
        lent(app_server, {CHAT: gated}) as served,
        served.http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
        ) as response,
    ):
        expect_status(response, 200)
        lines = response.iter_lines()
        contents: list[str] = []
        try:
            # Read until the first chunk with content: the role chunk comes before it.
            while not contents:
                line = next(lines)
                if line.startswith("data:") and line[5:].strip() != "[DONE]":
                    chunk = json.loads(line[5:])
                    contents = [d.get("content") for d in deltas([chunk]) if d.get("content")]
        except (StopIteration, httpx2.HTTPError, json.JSONDecodeError) as error:
            raise AssertionError(
                "The first token never reached the client while the model held the second "
                f"({type(error).__name__}). Send each chunk as the model yields it; never collect "
                "the answer first."
            ) from None
        expect_equal(contents, [first_token], "the content of the first chunk with content")
        expect_equal(
            gated.tokens_yielded, 1, "pieces the model had made when the first token arrived"
        )
        gated.release()
        for _ in lines:
            pass


@graded
def test_a_client_that_goes_away_stops_generation(app_server: Any) -> None:
    gated = GatedLM(timeout=GATE_TIMEOUT)
    with lent(app_server, {CHAT: gated}) as served:
        stream = served.client().chat.completions.create(
            model=CHAT, messages=QUESTION, max_completion_tokens=50, stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        stream.close()  # the client goes away after the first token
        # The model's stream then stops: closed by the app, or at its gate's time limit.
        gated.stopped.wait(GATE_TIMEOUT + 5)
    if not gated.closed_early.is_set():
        raise OutOfTime(
            "The client closed the stream after the first token, but the model's stream was not "
            f"closed (it ended as {gated.stop_reason!r}). Iterate model.stream_complete inside the "
            "generator your StreamingResponse streams, so that a disconnect cancels it."
        )


# --- Errors and bounds -----------------------------------------------------------------------


@graded
def test_an_invalid_body_is_a_400_in_openais_shape(served: Served) -> None:
    client = served.client()
    create(client, "a valid request first", model=CHAT, messages=QUESTION, max_completion_tokens=2)
    for field, bad in [("n", {"n": 2}), ("max_completion_tokens", {"max_completion_tokens": 0})]:
        error = expect_raises(
            openai.BadRequestError,
            lambda bad=bad: client.chat.completions.create(model=CHAT, messages=QUESTION, **bad),
            f"a request with {shown(bad)}",
        )
        detail = expect_openai_error(error, 400, f"a request with {shown(bad)}")
        expect_equal(detail["type"], "invalid_request_error", "the error's type")
        expect_equal(detail["param"], field, "the error's param (the field at fault)")
        expect_equal(detail["code"], None, "the 400's code")
    response = served.post("/v1/chat/completions", {"model": CHAT})
    expect_status(response, 400)
    expect_exact_keys(
        json_of(response, "the 400"), ["error"], "the 400 for a body without messages"
    )


@graded
def test_a_missing_or_wrong_key_is_a_401_in_openais_shape(served: Served, app_server: Any) -> None:
    served.client().models.list()  # the right key works
    checks = [
        ("GET /v1/models", lambda c: c.models.list()),
        ("a completion", lambda c: c.chat.completions.create(model=CHAT, messages=QUESTION)),
        (
            "a stream",
            lambda c: c.chat.completions.create(model=CHAT, messages=QUESTION, stream=True),
        ),
        (
            "embeddings",
            lambda c: c.embeddings.create(model=EMBEDDER, input="hi", encoding_format="float"),
        ),
    ]
    for what, call in checks:
        error = expect_raises(
            openai.AuthenticationError,
            lambda call=call: call(served.client("wrong")),
            f"{what} with a wrong key",
        )
        detail = expect_openai_error(error, 401, f"{what} with a wrong key")
        expect_equal(detail["code"], "invalid_api_key", "the 401's code")
    response = served.http.get("/v1/models")
    expect_status(response, 401)
    expect_exact_keys(
        json_of(response, "the 401"), ["error"], "the 401 for no Authorization header"
    )
    # A server started without COMPAT_API_KEY lets no one in, whatever they send.
    with (
        app_server({}, settings={"api_key": None}) as base_url,
        httpx2.Client(base_url=base_url, timeout=READ_TIMEOUT) as http,
    ):
        for headers in (
            {},
            {"Authorization": "Bearer nothing"},
            {"Authorization": f"Bearer {KEY}"},
        ):
            response = http.get("/v1/models", headers=headers)
            expect_no_entry(response, headers)


def expect_no_entry(response: httpx2.Response, headers: dict[str, str]) -> None:
    """With no API key configured, a request with these headers is a 401."""
    if response.status_code != 401:
        raise AssertionError(
            "With no API key configured (settings.api_key is None), GET /v1/models with "
            f"headers {shown(headers)} must be a 401; got {response.status_code}."
        )


@graded
def test_an_unknown_model_is_a_404_in_openais_shape(app_server: Any) -> None:
    with lent(app_server, {"tiny-a": get_model()}, {"emb-a": embed}) as served:
        expect_named_models_and_404s(served)


def expect_named_models_and_404s(served: Served) -> None:
    """Answers name the model the request named; a model the registry lacks is a 404."""
    client = served.client()
    answer = create(
        client, "a known model", model="tiny-a", messages=QUESTION, max_completion_tokens=2
    )
    expect_equal(answer.model, "tiny-a", "model in the answer (the id the request named)")
    _, events = raw_stream(served, {"model": "tiny-a", "messages": QUESTION, "max_tokens": 2})
    models = {chunk.get("model") for chunk in chunks_of(events, "a stream of tiny-a")}
    expect_equal(models, {"tiny-a"}, "model in the chunks (the id the request named)")
    vectors = client.embeddings.create(model="emb-a", input="hi", encoding_format="float")
    expect_equal(vectors.model, "emb-a", "model of the embeddings (the id the request named)")
    checks = [
        ("a completion", lambda: client.chat.completions.create(model=CHAT, messages=QUESTION)),
        (
            "a stream",
            lambda: client.chat.completions.create(model="nope", messages=QUESTION, stream=True),
        ),
        (
            "embeddings",
            lambda: client.embeddings.create(model="tiny-a", input="hi", encoding_format="float"),
        ),
    ]
    for what, call in checks:
        error = expect_raises(openai.NotFoundError, call, f"{what} for a model the registry lacks")
        detail = expect_openai_error(error, 404, f"{what} for an unknown model")
        expect_equal(detail["param"], "model", "the 404's param")
        expect_equal(detail["code"], "model_not_found", "the 404's code")


@graded
def test_bodies_messages_and_tokens_are_bounded(served: Served) -> None:
    schemas = given_schemas()
    too_many = [{"role": "user", "content": "hi"}] * (schemas.MAX_MESSAGES + 1)
    too_long = [{"role": "user", "content": "a" * (schemas.MAX_CONTENT_CHARS + 1)}]
    cases = [
        ("too many messages", {"model": CHAT, "messages": too_many}, 400),
        ("a message too long", {"model": CHAT, "messages": too_long}, 400),
        (
            "too many tokens",
            {"model": CHAT, "messages": QUESTION, "max_tokens": schemas.MAX_COMPLETION_TOKENS + 1},
            400,
        ),
        (
            "texts to embed",
            {"model": EMBEDDER, "input": ["a"] * (schemas.MAX_EMBEDDING_INPUTS + 1)},
            400,
        ),
    ]
    for what, body, status in cases:
        path = "/v1/embeddings" if "input" in body else "/v1/chat/completions"
        response = served.post(path, body)
        if response.status_code != status:
            raise AssertionError(
                f"POST {path} with {what}: expected {status}, got {response.status_code}."
            )
        expect_exact_keys(json_of(response, what), ["error"], f"the {status} for {what}")
    big = {"model": CHAT, "messages": [{"role": "user", "content": "x" * (schemas.MAX_BODY_SIZE)}]}
    response = served.post("/v1/chat/completions", big)
    expect_equal(response.status_code, 413, "the status of a body over MAX_BODY_SIZE")


# --- Models and embeddings -----------------------------------------------------------------


@graded
def test_models_lists_every_model_of_the_registry(app_server: Any) -> None:
    models = {"tiny-a": get_model(), "tiny-b": get_model()}
    with lent(app_server, models, {"emb-a": embed}) as served:
        page = list_models(served)
    got = sorted((m.id, m.object, m.created, m.owned_by) for m in page.data)
    expect_equal(
        got,
        sorted(
            (name, "model", 1_700_000_000, "the-tests") for name in ("tiny-a", "tiny-b", "emb-a")
        ),
        "the models of GET /v1/models (id, object, created, owned_by from the registry)",
    )


def list_models(served: Served) -> Any:
    """GET /v1/models with the official client, its strict validation on."""
    try:
        return served.client().models.list()
    except openai.APIResponseValidationError as error:
        raise AssertionError(
            f"The client's strict validation refused GET /v1/models: {shown(error.body)}."
        ) from None


@graded
def test_embeddings_match_the_embedder_in_both_formats(served: Served) -> None:
    texts = ["my parcel never arrived", "I was charged twice", "the app crashes"]
    expected = embed(texts)
    client = served.client()
    try:
        floats = client.embeddings.create(model=EMBEDDER, input=texts, encoding_format="float")
    except openai.APIResponseValidationError as error:
        raise AssertionError(
            f"The client's strict validation refused your embeddings: {shown(error.body)}."
        ) from None
    expect_equal([e.index for e in floats.data], [0, 1, 2], "the indexes of the embeddings")
    for got, want in zip(floats.data, expected, strict=True):
        if got.embedding != pytest.approx(want, abs=1e-9):
            raise AssertionError(
                "The float embeddings are not coursekit.embeddings.embed's vectors, in order."
            )
    expect_equal(floats.model, EMBEDDER, "model")
    tokens = sum(count_tokens(text) for text in texts)
    expect_equal((floats.usage.prompt_tokens, floats.usage.total_tokens), (tokens, tokens), "usage")
    one = client.embeddings.create(model=EMBEDDER, input=texts[0], encoding_format="float")
    expect_equal(len(one.data), 1, "embeddings for one string")
    # The client asks for base64 by default (four bytes per float, little-endian) and
    # decodes it; its strict validation would refuse its own default, so this one is not strict.
    default = served.client(strict=False).embeddings.create(model=EMBEDDER, input=texts)
    for got, want in zip(default.data, expected, strict=True):
        if not isinstance(got.embedding, list) or got.embedding != pytest.approx(want, abs=1e-6):
            raise AssertionError(
                'With encoding_format "base64" (the client\'s default), each embedding must be '
                "the base64 of its values as little-endian float32."
            )
    raw = served.post(
        "/v1/embeddings", {"model": EMBEDDER, "input": texts[:1], "encoding_format": "base64"}
    )
    data = json_of(raw, 'POST /v1/embeddings with "base64"').get("data") or [{}]
    packed = data[0].get("embedding")
    size = 4 * len(expected[0])  # bytes of the vector as float32
    try:
        values = struct.unpack(f"<{len(expected[0])}f", base64.b64decode(packed, validate=True))
    except (TypeError, ValueError, struct.error):
        raise AssertionError(
            'POST /v1/embeddings with "encoding_format": "base64": the embedding must be a '
            f"base64 text of {size} bytes (its values as little-endian float32); got "
            f"{shown(packed if not isinstance(packed, list) else packed[:3])}."
        ) from None
    if list(values) != pytest.approx(expected[0], abs=1e-6):
        raise AssertionError("The base64 embedding does not decode to the embedder's vector.")
