"""Graded tests for step 08. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/08_streaming_sse`. Points and hints live in course.toml.
`client` is a `TestClient` on the `app` in your app.py (`client.post` reads a whole
stream at once); `fast_client` is an httpx client on your app under a real uvicorn
server (the grader's `app_url`), its model without a delay per token. The tests that
hold the model your app streams from start your app the same way (the grader's
`app_server`) with a model of the test's own, lent to it (`coursekit.model_link`):
your get_chat_model answers it, and it runs in the test's process, so what the test sees
on it is what your app did with it. The tests of streaming and of a disconnect lend
`coursekit.llm.GatedLM`, which holds every token after the first until the test lets it
through; the tests of a failure mid-answer lend `coursekit.llm.FailingLM`, which raises
after a given number of tokens. They read the stream with httpx and httpx-sse.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource, connect_sse

from autograder.expect import (
    OutOfTime,
    expect_equal,
    expect_status,
    expect_validation_error,
    shown,
    shown_body,
)
from autograder.sse import parse_sse
from coursekit.llm import FailingLM, GatedLM, ModelError, get_model
from coursekit.model_lending import lend
from coursekit.model_link import LINK_ENV

QUESTION = "How does a model stream tokens to a client?"
# A whole conversation: the model must get every message, in order, not only the last.
CONVERSATION = [
    {"role": "system", "content": "You answer questions about serving models."},
    {"role": "user", "content": "What is a batch?"},
    {"role": "assistant", "content": "A batch is a group of rows scored in one call."},
    {"role": "user", "content": QUESTION},
]
MAX_MESSAGES = 32
MAX_CONTENT_LENGTH = 4000  # characters per message
BODY_LIMIT = 1_048_576  # bytes: MAX_BODY_SIZE in the statement
JSON_HEADERS = {"content-type": "application/json"}
GATE_TIMEOUT = 5.0  # seconds a held token waits for the test before the stream gives up
READ_TIMEOUT = 3.0  # seconds the test waits for the server's next bytes (below GATE_TIMEOUT)


def chat(content: str = QUESTION, max_tokens: int = 6, seed: int = 0) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "seed": seed,
    }


def expected_tokens(content: str = QUESTION, max_tokens: int = 6, seed: int = 0) -> list[str]:
    messages = [{"role": "user", "content": content}]
    return get_model().generate(messages, max_tokens=max_tokens, seed=seed)


def stream(client: Any, body: dict[str, Any]) -> list[dict[str, str]]:
    """POST /chat/stream with `body`; check the answer is an event stream; its events."""
    response = client.post("/chat/stream", json=body)
    expect_status(response, 200)
    return parse_sse(response.text)


def token_of(event: dict[str, str], what: str) -> str:
    """The text of a token event: `data` must be the JSON object {"token": "..."}."""
    if event.get("event") != "token":
        raise AssertionError(f'{what}: expected "event: token", got the event {shown(event)}.')
    try:
        data = json.loads(event.get("data", ""))
    except json.JSONDecodeError:
        raise AssertionError(
            f'{what}: the data line must be JSON like {{"token": "..."}}, got '
            f"{shown(event.get('data'))}."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        raise AssertionError(
            f'{what}: the data must be a JSON object {{"token": "<text>"}}, got {shown(data)}.'
        )
    return data["token"]


def tokens_then_done(events: list[dict[str, str]], what: str) -> list[str]:
    """Check the events are token events then one done event; return the tokens."""
    if not events:
        raise AssertionError(f"{what}: the stream held no events at all.")
    *tokens, last = events
    expect_equal(
        (last.get("event"), last.get("data")),
        ("done", "[DONE]"),
        f"{what}: the last event's (event, data)",
    )
    return [token_of(event, f"{what}, event {i}") for i, event in enumerate(tokens)]


def role_and_content(message: Any) -> tuple[Any, Any]:
    """(role, content) of a message the app handed to the model: a dict or an object."""
    if isinstance(message, Mapping):
        return message.get("role"), message.get("content")
    return getattr(message, "role", None), getattr(message, "content", None)


class RecordingLM:
    """The course's zero-delay model, noting what each `stream_chat` call was given."""

    def __init__(self) -> None:
        self.model = get_model()
        self.calls: list[dict[str, Any]] = []

    def stream_chat(
        self, messages: Any, *, max_tokens: int = 32, seed: int = 0, temperature: float = 1.0
    ) -> AsyncIterator[str]:
        self.calls.append(
            {
                "messages": [list(role_and_content(message)) for message in messages],
                "max_tokens": max_tokens,
                "seed": seed,
            }
        )
        return self.model.stream_chat(
            messages, max_tokens=max_tokens, seed=seed, temperature=temperature
        )


class ModelSlot:
    """The model lent to the app, which a test may swap between two requests."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def stream_chat(self, messages: Any, **options: Any) -> AsyncIterator[str]:
        return self.model.stream_chat(messages, **options)


@pytest.fixture
def app_overrides() -> list[tuple[str, str]]:
    """Your get_chat_model answers the model a test lends (`lent`), else the course's
    TinyLM without a delay per token (`fast_client`)."""
    return [("app:get_chat_model", "coursekit.model_link:linked_model")]


@contextlib.contextmanager
def lent(app_server: Callable[..., Any], model: Any) -> Iterator[httpx.Client]:
    """An httpx client on your app under uvicorn, its get_chat_model answering `model`,
    which stays here, in the test's process."""
    with (
        lend(model) as address,
        app_server({LINK_ENV: address}) as base_url,
        httpx.Client(base_url=base_url, timeout=READ_TIMEOUT) as http,
    ):
        yield http


@pytest.fixture
def fast_client(app_url: str) -> Iterator[httpx.Client]:
    """Your app under a real uvicorn server (the grader's `app_url`), its model without a
    delay per token (`app_overrides`): a whole answer arrives at once."""
    with httpx.Client(base_url=app_url, timeout=None) as http:
        yield http


def post_raw(client: Any, content: bytes | Iterator[bytes]) -> Any:
    """POST bytes as JSON to /chat/stream: how a test sends a body of an exact size."""
    return client.post("/chat/stream", content=content, headers=JSON_HEADERS)


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with spaces to exactly `size` bytes: still valid JSON."""
    data = json.dumps(body).encode()
    return data + b" " * (size - len(data))


def chunked(data: bytes, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """`data` as a generator: a body with no length goes out chunked, without Content-Length."""
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def failing_stream(client: Any, model: FailingLM, body: dict[str, Any], what: str) -> Any:
    """POST /chat/stream while `model` fails mid-answer: the response, 200."""
    try:
        response = client.post("/chat/stream", json=body)
    except Exception as exc:  # TestClient re-raises what the app let escape; httpx, a cut
        raise AssertionError(
            f"{what}: the model raised {type(exc).__name__} after {model.fail_after} token(s), "
            "and the exception escaped your stream: a real client sees the connection break "
            "with no error event and no end marker (and events already yielded may be lost). "
            "Catch the model's errors around the loop over its tokens."
        ) from None
    expect_status(response, 200)
    return response


def error_message_of(event: dict[str, str], what: str) -> str:
    """The message of an error event: `data` must be the JSON object {"message": "..."}."""
    if event.get("event") != "error":
        raise AssertionError(f'{what}: expected "event: error", got the event {shown(event)}.')
    try:
        data = json.loads(event.get("data", ""))
    except json.JSONDecodeError:
        raise AssertionError(
            f'{what}: the data line must be JSON like {{"message": "..."}}, got '
            f"{shown(event.get('data'))}."
        ) from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("message"), str)
        or not data["message"]
    ):
        raise AssertionError(
            f'{what}: the data must be a JSON object {{"message": "<text>"}} with a message '
            f"that is not empty, got {shown(data)}."
        )
    return data["message"]


def test_the_stream_is_served_as_text_event_stream(client):
    # The app's own model (get_chat_model, with its delay per token): it must work as is.
    response = client.post("/chat/stream", json=chat(max_tokens=3))
    expect_status(response, 200)
    content_type = response.headers.get("content-type", "")
    expect_equal(
        content_type.split(";")[0].strip(),
        "text/event-stream",
        "the content type of POST /chat/stream",
    )
    events = parse_sse(response.text)
    if not events:
        raise AssertionError(
            f"POST /chat/stream answered no SSE events. Body: {shown_body(response.text)}"
        )
    tokens = tokens_then_done(events, "POST /chat/stream with the app's own model")
    expect_equal(tokens, expected_tokens(max_tokens=3), "the tokens of the app's own model")


def test_each_token_is_a_token_event_with_json_data(fast_client):
    events = stream(fast_client, chat(max_tokens=4))
    if len(events) < 4:
        raise AssertionError(f"expected at least 4 token events, got {shown(events)}.")
    for i, event in enumerate(events[:4]):
        token_of(event, f"event {i} of POST /chat/stream")


def test_the_tokens_are_the_models_answer_for_the_seed(fast_client):
    for seed, max_tokens in ((0, 8), (7, 8), (7, 3)):
        events = stream(fast_client, chat(max_tokens=max_tokens, seed=seed))
        tokens = [
            token_of(e, f"event {i} (seed {seed})")
            for i, e in enumerate(events)
            if e.get("event") == "token"
        ]
        expect_equal(
            tokens,
            expected_tokens(max_tokens=max_tokens, seed=seed),
            f"the tokens for seed {seed}, max_tokens {max_tokens}",
        )


def expect_one_call(
    model: RecordingLM, what: str, messages: list[dict[str, str]], max_tokens: int, seed: int
) -> None:
    """`what` called model.stream_chat once, with these messages, max_tokens and seed."""
    if len(model.calls) != 1:
        raise AssertionError(
            f"{what} called stream_chat on the model that get_chat_model provides "
            f"{len(model.calls)} time(s), expected once. Take the model with ChatModelDep."
        )
    call = model.calls[0]
    expect_equal(
        [role for role, _ in call["messages"]],
        [message["role"] for message in messages],
        f"the roles of the messages {what} passed to model.stream_chat",
    )
    expect_equal(
        call["messages"],
        [[message["role"], message["content"]] for message in messages],
        f"the messages ([role, content]) {what} passed to model.stream_chat",
    )
    expect_equal(
        {"max_tokens": call["max_tokens"], "seed": call["seed"]},
        {"max_tokens": max_tokens, "seed": seed},
        f"what {what} passed to model.stream_chat",
    )
    model.calls.clear()


def test_the_model_gets_the_whole_conversation(app_server):
    model = RecordingLM()
    with lent(app_server, model) as http:
        body = {"messages": CONVERSATION, "max_tokens": 4, "seed": 5}
        what = "POST /chat/stream with a four-message conversation"
        tokens = tokens_then_done(stream(http, body), what)
        expect_one_call(model, what, CONVERSATION, max_tokens=4, seed=5)
        expected = get_model().generate(CONVERSATION, max_tokens=4, seed=5)
        expect_equal(tokens, expected, f"the tokens of {what}")
        one = [{"role": "user", "content": QUESTION}]
        what = "a second POST /chat/stream, with one message"
        tokens_then_done(stream(http, {"messages": one, "max_tokens": 3, "seed": 2}), what)
        expect_one_call(model, what, one, max_tokens=3, seed=2)


def test_max_tokens_defaults_to_32_and_seed_to_0(fast_client):
    body = chat()
    del body["max_tokens"], body["seed"]
    tokens = tokens_then_done(
        stream(fast_client, body), "POST /chat/stream without max_tokens and seed"
    )
    expect_equal(
        tokens,
        expected_tokens(max_tokens=32, seed=0),
        "the tokens of a POST without max_tokens and seed (32, seed 0)",
    )


def test_the_stream_ends_with_one_done_event(fast_client):
    for max_tokens in (5, 1):
        tokens = tokens_then_done(
            stream(fast_client, chat(max_tokens=max_tokens)),
            f"POST /chat/stream (max_tokens {max_tokens})",
        )
        expect_equal(
            len(tokens),
            max_tokens,
            f"the number of token events before the done event (max_tokens {max_tokens})",
        )


def test_token_events_are_numbered_from_zero(fast_client):
    # Several streams on one app: each stream numbers its own tokens, from 0.
    streams = [
        ("POST /chat/stream (max_tokens 5)", 5),
        ("a second POST /chat/stream (max_tokens 3)", 3),
        ("a third POST /chat/stream (max_tokens 2)", 2),
    ]
    for what, count in streams:
        events = stream(fast_client, chat(max_tokens=count))
        ids = [event.get("id") for event in events if event.get("event") == "token"]
        expect_equal(ids, [str(i) for i in range(count)], f"the id of each token event of {what}")


def test_the_first_token_arrives_before_the_second_is_generated(app_server):
    gated = GatedLM(timeout=GATE_TIMEOUT)
    expected = gated.generate(chat()["messages"], max_tokens=6, seed=0)
    with (
        lent(app_server, gated) as http,
        connect_sse(http, "POST", "/chat/stream", json=chat()) as source,
    ):
        expect_status(source.response, 200)
        events = source.iter_sse()
        try:
            first = next(events)
        except (httpx.HTTPError, StopIteration) as exc:
            raise AssertionError(
                "The first token never reached the client while the model held the second "
                f"one ({type(exc).__name__}). Send each token as soon as the model yields it; "
                "do not collect the answer first."
            ) from None
        received = {"event": first.event, "data": first.data}
        expect_equal(token_of(received, "the first event"), expected[0], "the first token")
        expect_equal(
            gated.tokens_yielded, 1, "tokens the model had generated when the first arrived"
        )
        gated.allow(1)
        second = next(events)
        received = {"event": second.event, "data": second.data}
        expect_equal(token_of(received, "the second event"), expected[1], "the second token")
        gated.release()
        rest = [{"event": e.event, "data": e.data} for e in events]
    expect_equal(len(rest), 5, "events after the second token (4 tokens and the done event)")
    tokens_then_done(rest, "the rest of the stream")


def test_generation_stops_when_the_client_disconnects(app_server):
    gated = GatedLM(timeout=GATE_TIMEOUT)
    with lent(app_server, gated) as http:
        with http.stream("POST", "/chat/stream", json=chat(max_tokens=50)) as response:
            expect_status(response, 200)
            first = next(EventSource(response).iter_sse())
            token_of({"event": first.event, "data": first.data}, "the first event")
        # Leaving the block closes the connection: the client has gone away. The model's
        # stream then stops: closed by the app, or at its gate's time limit if it was not.
        gated.stopped.wait(GATE_TIMEOUT + 5)
    if not gated.closed_early.is_set():
        raise OutOfTime(
            "The client disconnected after the first token, but the model's stream was not "
            f"closed (it ended as {gated.stop_reason!r}). Iterate the model inside the "
            "generator FastAPI streams, so that closing the response closes the model's stream."
        )


def test_a_model_failure_mid_answer_sends_an_error_event_then_done(app_server):
    # Two kinds of failure, after some tokens and before any: catch them all, not one type.
    slot = ModelSlot(get_model())
    with lent(app_server, slot) as http:
        for fail_after, error in (
            (2, ModelError("the model server crashed")),
            (0, OSError("reset")),
        ):
            slot.model = model = FailingLM(fail_after, error=error)
            what = (
                f"POST /chat/stream while the model raises {type(error).__name__} "
                f"after {fail_after} token(s)"
            )
            response = failing_stream(http, model, chat(max_tokens=6), what)
            expect_tokens_error_done(parse_sse(response.text), model, what)


def expect_tokens_error_done(events: list[dict[str, str]], model: FailingLM, what: str) -> None:
    """The events of a stream whose model failed: its tokens, an error event, done."""
    if len(events) < 2:
        raise AssertionError(
            f"{what}: expected the tokens, one error event and the done event; got {shown(events)}."
        )
    *tokens, error_event, done = events
    expect_equal(
        (done.get("event"), done.get("data")),
        ("done", "[DONE]"),
        f"{what}: the last event's (event, data), after the error event",
    )
    error_message_of(error_event, f"{what}, the event before the done event")
    expect_equal(
        [token_of(event, f"{what}, event {i}") for i, event in enumerate(tokens)],
        model.generate(chat()["messages"], max_tokens=6)[: model.fail_after],
        f"{what}: the token events before the error event",
    )


def test_the_error_event_does_not_show_the_exceptions_text(app_server):
    secret = "connection to 10.0.0.7:8000 refused (key sk-test-4f2a)"
    model = FailingLM(1, error=RuntimeError(secret))
    what = f"POST /chat/stream while the model raises RuntimeError({secret!r})"
    with lent(app_server, model) as http:
        response = failing_stream(http, model, chat(max_tokens=4), what)
    errors = [event for event in parse_sse(response.text) if event.get("event") == "error"]
    if len(errors) != 1:
        raise AssertionError(f"{what}: expected one error event, got {len(errors)}.")
    error_message_of(errors[0], f"{what}: the error event")
    for part in ("10.0.0.7", "sk-test-4f2a"):
        if part in response.text:
            raise AssertionError(
                f"{what}: the stream shows {part!r}, from the exception's text. The client "
                "gets a message of your own; the details belong in the server's log."
            )


def test_a_model_failure_is_logged(app_server, app_log):
    model = FailingLM(2)
    what = "POST /chat/stream while the model raises ModelError after 2 tokens"
    with lent(app_server, model) as http:
        failing_stream(http, model, chat(max_tokens=4), what)
    # app_log(): what your app's loggers logged at WARNING or above (uvicorn's left out).
    if not any(line.level >= logging.WARNING for line in app_log()):
        raise AssertionError(
            f"{what} logged nothing at level WARNING or above. Log the failure (for "
            "instance logger.exception(...)) before sending the error event: the client's "
            "message says little, the log is where you find out what happened."
        )


def test_the_events_are_documented_in_openapi(app_server):
    slot = ModelSlot(get_model())
    with lent(app_server, slot) as http:
        operation = http.get("/openapi.json").json()["paths"]["/chat/stream"]["post"]
        # The stream must be what its documentation says, for a full answer and a failed one.
        events = stream(http, chat(max_tokens=3))
        slot.model = model = FailingLM(1)
        events += parse_sse(failing_stream(http, model, chat(), "a failing stream").text)
    content = operation.get("responses", {}).get("200", {}).get("content", {})
    item = content.get("text/event-stream", {}).get("itemSchema", {})
    documented = {
        entry.get("properties", {}).get("event", {}).get("const"): entry
        for entry in item.get("oneOf", [])
    }
    if set(documented) != {"token", "error", "done"}:
        raise AssertionError(
            "/openapi.json documents POST /chat/stream's events as "
            f"{shown(item)}: FastAPI writes only the generic SSE envelope for a stream of "
            "ServerSentEvent. Expected one entry (oneOf) per event: token, error and done. "
            "Pass the given STREAM_RESPONSES as the route's responses."
        )
    if "413" not in operation.get("responses", {}):
        raise AssertionError("/openapi.json does not list a 413 for POST /chat/stream.")
    for event in events:
        name = event.get("event")
        if name not in documented:
            raise AssertionError(f"the event {shown(event)} is not one /openapi.json documents.")
        data_schema = documented[name]["properties"]["data"]
        if "const" in data_schema:
            expect_equal(event.get("data"), data_schema["const"], f"the data of a {name} event")
            continue
        data = json.loads(event.get("data", "null"))
        required = data_schema["contentSchema"].get("required", [])
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in required):
            raise AssertionError(
                f"the {name} event {shown(event)} does not match its documented data, an "
                f"object with the string fields {shown(required)}."
            )


def test_empty_messages_are_a_422(fast_client):
    tokens_then_done(stream(fast_client, chat(max_tokens=2)), "a valid request first")
    expect_validation_error(
        fast_client.post("/chat/stream", json={**chat(), "messages": []}), loc=["body", "messages"]
    )
    body = chat()
    del body["messages"]
    expect_validation_error(
        fast_client.post("/chat/stream", json=body), loc=["body", "messages"], error_type="missing"
    )
    expect_validation_error(
        fast_client.post(
            "/chat/stream", json={**chat(), "messages": [{"role": "wizard", "content": "hi"}]}
        ),
        loc=["body", "messages", 0, "role"],
    )


def test_max_tokens_out_of_range_is_a_422(fast_client):
    tokens_then_done(
        stream(fast_client, chat(max_tokens=256)), "a valid request with max_tokens 256"
    )
    for bad in (0, -1, 257):
        expect_validation_error(
            fast_client.post("/chat/stream", json=chat(max_tokens=bad)), loc=["body", "max_tokens"]
        )


def test_message_count_and_length_are_bounded(fast_client):
    longest = "word " * (MAX_CONTENT_LENGTH // 5)  # exactly MAX_CONTENT_LENGTH characters
    most = [{"role": "user", "content": longest} for _ in range(MAX_MESSAGES)]
    tokens_then_done(
        stream(fast_client, {"messages": most, "max_tokens": 2}),
        f"a valid request: {MAX_MESSAGES} messages of {MAX_CONTENT_LENGTH} characters",
    )
    expect_validation_error(
        fast_client.post("/chat/stream", json={"messages": [*most, most[0]]}),
        loc=["body", "messages"],
    )
    too_long = longest + "x"
    for messages, index in (
        ([{"role": "system", "content": too_long}, {"role": "user", "content": QUESTION}], 0),
        (
            [
                {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": too_long},
                {"role": "user", "content": QUESTION},
            ],
            1,
        ),
    ):
        expect_validation_error(
            fast_client.post("/chat/stream", json={"messages": messages}),
            loc=["body", "messages", index, "content"],
        )


def test_a_body_over_the_size_limit_is_a_413(fast_client):
    body = chat(max_tokens=2)
    tokens_then_done(
        parse_sse(post_raw(fast_client, padded(body, BODY_LIMIT)).text),
        f"a valid body of exactly {BODY_LIMIT} bytes",
    )
    # Content-Length says it is too big: Starlette answers before any handler runs.
    expect_status(post_raw(fast_client, padded(body, BODY_LIMIT + 1)), 413)
    # No Content-Length (a chunked body): the limit trips while FastAPI reads it.
    expect_status(post_raw(fast_client, chunked(padded(body, BODY_LIMIT + 1))), 413)


def test_the_chat_page_is_served_and_posts_to_the_stream(client):
    response = client.get("/")
    expect_status(response, 200)
    content_type = response.headers.get("content-type", "")
    expect_equal(content_type.split(";")[0].strip(), "text/html", "the content type of GET /")
    if "/chat/stream" not in response.text:
        raise AssertionError("GET / answered a page without '/chat/stream': serve chat.html.")
    # The given page, as this folder has it; a checkout may end its lines either way.
    page = Path(__file__).with_name("chat.html").read_bytes().replace(b"\r\n", b"\n")
    if response.content.replace(b"\r\n", b"\n") != page:
        raise AssertionError(
            "GET / answered a page that is not chat.html, the file beside app.py. Serve "
            f"that file. Got: {shown_body(response.text)}"
        )
