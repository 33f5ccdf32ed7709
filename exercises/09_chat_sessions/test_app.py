"""Graded tests for step 09. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/09_chat_sessions`. Points and hints live in course.toml.
Every test gets its own database file and two users, alice and bob, each with an API
key (set in the environment before your app.py is imported). Most tests swap the chat
model for `coursekit.llm.ScriptedLM`, a model that answers from a script (a text, or
tool calls) and records every call, so a test knows exactly what the model was asked.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from httpx_sse import connect_sse
from pydantic import BaseModel, Field

from autograder.expect import (
    OutOfTime,
    expect_equal,
    expect_exact_keys,
    expect_json,
    expect_status,
    expect_validation_error,
    shown,
    shown_body,
)
from autograder.sse import parse_sse
from coursekit.llm import (
    ConversationError,
    ScriptedLM,
    as_message,
    check_conversation,
    get_model,
    prompt_tokens,
)
from coursekit.models import load_model

KEYS = {"alice": "key-alice", "bob": "key-bob"}
ALICE = {"Authorization": f"Bearer {KEYS['alice']}"}
BOB = {"Authorization": f"Bearer {KEYS['bob']}"}
TICKET = "I was charged twice for my order, please refund me"
GATE_TIMEOUT = 10.0  # seconds a held model waits for the test: stops a hang, never judges speed


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh database and the two users' keys, set before app.py is imported."""
    database = tmp_path / "chat.sqlite3"
    monkeypatch.setenv("CHAT_API_KEYS", json.dumps(KEYS))
    monkeypatch.setenv("CHAT_DATABASE_PATH", str(database))
    return database


# --- helpers --------------------------------------------------------------------------


def given(module: str) -> Any:
    """A given module (service, chat_schemas, toolbox) as your app imported it."""
    return sys.modules[module]


def use_model(app: Any, model: Any) -> Any:
    """Make every request of `app` get `model` from the get_chat_model dependency."""
    app.dependency_overrides[given("service").get_chat_model] = lambda: model
    return model


def use_settings(app: Any, **changes: Any) -> None:
    """Run `app` with the environment's settings, but for `changes`."""
    settings = given("service").Settings(**changes)
    app.dependency_overrides[given("service").get_settings] = lambda: settings


def use_tools(app: Any, tools: Mapping[str, Any]) -> None:
    """Give the model these tools instead of the service's own."""
    app.dependency_overrides[given("service").get_tools] = lambda: tools


def new_session(client: Any, headers: dict[str, str] = ALICE, **body: Any) -> str:
    """POST /sessions; check the 201 and its id; the id."""
    created = expect_json(client.post("/sessions", json=body, headers=headers), 201)
    expect_exact_keys(created, ["id"], "the answer of POST /sessions")
    if not isinstance(created["id"], str) or not created["id"]:
        raise AssertionError(
            f"POST /sessions answered an id that is not a string: {shown(created)}."
        )
    return created["id"]


def say(client: Any, session_id: str, content: str, headers: dict[str, str] = ALICE) -> Any:
    """POST a user message; check the 200; the reply's body."""
    response = client.post(
        f"/sessions/{session_id}/messages", json={"content": content}, headers=headers
    )
    return expect_json(response)


def messages_of(client: Any, session_id: str, headers: dict[str, str] = ALICE) -> list[Any]:
    """GET /sessions/{id}: check its shape; the messages it holds, in order."""
    body = expect_json(client.get(f"/sessions/{session_id}", headers=headers))
    expect_exact_keys(body, ["id", "messages"], f"the answer of GET /sessions/{session_id}")
    expect_equal(body["id"], session_id, f"the id in GET /sessions/{session_id}")
    return body["messages"]


def plain(message: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message without the keys that may be absent or null (generous in form)."""
    return {
        key: value
        for key, value in message.items()
        if not (key == "tool_calls" and not value) and not (key == "content" and value is None)
    }


def plain_all(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [plain(message) for message in messages]


def expect_valid_conversation(messages: Sequence[Any], what: str) -> None:
    try:
        check_conversation(messages)
    except ConversationError as error:
        raise AssertionError(
            f"{what} is not a conversation the model accepts: {error}. Messages: {shown(messages)}"
        ) from None


def tool_error_text(content: Any, what: str) -> str:
    """The text of a tool error: the content must be the JSON object {"error": "..."}."""
    try:
        data = json.loads(content)
    except (TypeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("error"), str) or not data["error"]:
        raise AssertionError(
            f'{what}: expected the content {{"error": "<what went wrong>"}} (toolbox.tool_error), '
            f"got {shown(content)}."
        )
    return data["error"]


def tool_names(call: Any) -> list[str]:
    return sorted(spec["function"]["name"] for spec in call.tools)


def reference_trim(messages: Sequence[Mapping[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The rule of the statement, written plainly: what trim_history must return."""
    system = [dict(m) for m in messages[:1] if m["role"] == "system"]
    turns: list[list[dict[str, Any]]] = []
    for message in messages[len(system) :]:
        if message["role"] == "user" or not turns:
            turns.append([])
        turns[-1].append(dict(message))
    kept: list[dict[str, Any]] = []
    for turn in reversed(turns):
        if kept and prompt_tokens(system + turn + kept) > budget:
            break
        kept = turn + kept
    return system + kept


class RecordingLM:
    """A chat model (TinyLM by default) that notes what each call got and cost."""

    def __init__(self, model: Any = None) -> None:
        self.model = model if model is not None else get_model()
        self.prompts: list[list[dict[str, Any]]] = []
        self.max_tokens: list[int] = []
        self.tools: list[list[str]] = []
        self.usages: list[Any] = []

    def _note(self, messages: Any, tools: Any, max_tokens: int) -> None:
        self.prompts.append(json.loads(json.dumps(check_conversation(messages))))
        self.tools.append(sorted(spec["function"]["name"] for spec in tools or ()))
        self.max_tokens.append(max_tokens)

    async def complete(
        self, messages: Any, *, tools: Any = None, max_tokens: int = 32, **options: Any
    ) -> Any:
        self._note(messages, tools, max_tokens)
        completion = await self.model.complete(
            messages, tools=tools, max_tokens=max_tokens, **options
        )
        self.usages.append(completion.usage)
        return completion

    async def stream_complete(
        self, messages: Any, *, tools: Any = None, max_tokens: int = 32, **options: Any
    ) -> AsyncIterator[Any]:
        self._note(messages, tools, max_tokens)
        async for delta in self.model.stream_complete(
            messages, tools=tools, max_tokens=max_tokens, **options
        ):
            if delta.usage is not None:
                self.usages.append(delta.usage)
            yield delta


def stream_events(client: Any, session_id: str, content: str) -> list[tuple[str, Any]]:
    """POST .../messages/stream; check it is an event stream; (event, JSON data) pairs."""
    response = client.post(
        f"/sessions/{session_id}/messages/stream", json={"content": content}, headers=ALICE
    )
    expect_status(response, 200)
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    expect_equal(content_type, "text/event-stream", "the content type of the stream route")
    events = []
    for event in parse_sse(response.text):
        try:
            data = json.loads(event.get("data", ""))
        except json.JSONDecodeError:
            raise AssertionError(
                f"the stream sent an event whose data is not JSON: {shown(event)}."
            ) from None
        events.append((event.get("event", "message"), data))
    return events


# --- sessions and their history -----------------------------------------------------------


def test_a_new_session_holds_its_system_prompt(client):
    first = new_session(client)
    second = new_session(client, system="Answer in one sentence.")
    if first == second:
        raise AssertionError(f"two sessions got the same id {shown(first)}.")
    default = given("chat_schemas").DEFAULT_SYSTEM_PROMPT
    expect_equal(
        messages_of(client, first),
        [{"role": "system", "content": default}],
        "the messages of a session created with {} (the default system prompt)",
    )
    expect_equal(
        messages_of(client, second),
        [{"role": "system", "content": "Answer in one sentence."}],
        'the messages of a session created with {"system": "Answer in one sentence."}',
    )


def test_a_message_gets_the_models_reply_and_both_are_stored(app, client):
    model = use_model(app, RecordingLM())
    session = new_session(client)
    system = {"role": "system", "content": given("chat_schemas").DEFAULT_SYSTEM_PROMPT}
    question = {"role": "user", "content": "How does a service load its model?"}
    expected = get_model().reply([system, question], max_tokens=32).message
    reply = say(client, session, question["content"])
    expect_exact_keys(reply, ["message", "usage"], "the answer of POST /sessions/{id}/messages")
    expect_equal(plain(reply["message"]), expected, "the reply's message (TinyLM's answer)")
    expect_equal(model.prompts, [[system, question]], "the messages the model was given")
    expect_equal(model.max_tokens, [32], "max_tokens given to the model (max_reply_tokens)")
    expect_equal(
        model.tools,
        [["calculate", "classify_ticket", "count_words"]],
        "the tools the model was told about (toolbox.tool_specs of the tools)",
    )
    expect_equal(
        plain_all(messages_of(client, session)),
        [system, question, expected],
        "the stored messages after one turn, in order",
    )
    follow_up = {"role": "user", "content": "And where does the model file live?"}
    second = say(client, session, follow_up["content"])
    expect_equal(
        plain_all(messages_of(client, session)),
        [system, question, expected, follow_up, plain(second["message"])],
        "the stored messages after two turns, in order",
    )
    expect_equal(
        model.prompts[-1],
        [system, question, expected, follow_up],
        "the messages the model got for the second turn (the whole history)",
    )


def test_history_survives_a_restart_in_order(app, client, exercise):
    use_model(app, ScriptedLM([("count_words", {"text": "one two three"})], "Three words."))
    session = new_session(client)
    say(client, session, "Count the words of: one two three")
    use_model(app, ScriptedLM("Noted."))
    say(client, session, "Thanks")
    before = messages_of(client, session)
    expect_equal(len(before), 7, "messages stored after two turns (one with a tool call)")
    # A fresh import is a new process as far as your code can tell: only the database
    # file is left.
    restarted = exercise("app")
    use_model(restarted.app, ScriptedLM("Welcome back."))
    with TestClient(restarted.app) as again:
        expect_equal(
            messages_of(again, session), before, "the messages after a restart, same database"
        )
        say(again, session, "Still there?")
        after = messages_of(again, session)
    expect_equal(after[:7], before, "the first seven messages after one more turn")
    expect_equal(
        plain_all(after[7:]),
        [
            {"role": "user", "content": "Still there?"},
            {"role": "assistant", "content": "Welcome back."},
        ],
        "the two messages of the turn after the restart, at the end",
    )


def test_another_users_session_is_a_404(app, client):
    use_model(app, ScriptedLM("Hello."))
    session = new_session(client)
    say(client, session, "Hi")
    before = messages_of(client, session)
    unknown = "0" * 32
    path = f"/sessions/{session}"
    for method, url, body in (
        ("GET", path, None),
        ("POST", f"{path}/messages", {"content": "Let me in"}),
        ("POST", f"{path}/messages/stream", {"content": "Let me in"}),
        ("DELETE", path, None),
    ):
        theirs = client.request(method, url, json=body, headers=BOB)
        expect_status(theirs, 404)
        nobodys = client.request(method, url.replace(session, unknown), json=body, headers=BOB)
        expect_status(nobodys, 404)
        expect_equal(
            theirs.text.replace(session, unknown),
            nobodys.text,
            f"bob's {method} {url} (alice's session) against an unknown id: the same answer",
        )
    expect_equal(messages_of(client, session), before, "alice's messages after bob's tries")
    expect_status(client.get(f"/sessions/{unknown}", headers=ALICE), 404)
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        expect_status(client.get(path, headers=headers), 401)
        expect_status(client.post("/sessions", json={}, headers=headers), 401)


def test_delete_removes_the_session_and_its_messages(app, client):
    use_model(app, ScriptedLM("Hello."))
    session, kept = new_session(client), new_session(client)
    say(client, session, "Hi")
    say(client, kept, "Hi")
    kept_messages = messages_of(client, kept)
    deleted = client.delete(f"/sessions/{session}", headers=ALICE)
    expect_status(deleted, 204)
    expect_equal(deleted.content, b"", "the body of the 204 answer to DELETE")
    expect_status(client.get(f"/sessions/{session}", headers=ALICE), 404)
    expect_status(client.delete(f"/sessions/{session}", headers=ALICE), 404)
    expect_status(
        client.post(f"/sessions/{session}/messages", json={"content": "Hi"}, headers=ALICE), 404
    )
    expect_equal(messages_of(client, kept), kept_messages, "another session after a delete")
    database = given("service").get_settings().database_path
    with closing(given("store").connect(database)) as connection:
        left = given("store").load_messages(connection, session)
    expect_equal(left, [], "the rows left in the database for the deleted session")


# --- the tool-call loop ---------------------------------------------------------------------


def test_the_named_tool_runs_and_the_model_reads_its_result(app, client):
    model = use_model(
        app, RecordingLM(ScriptedLM([("classify_ticket", {"text": TICKET})], "Done."))
    )
    session = new_session(client)
    reply = say(client, session, f"Route this ticket: {TICKET}")
    tickets = load_model("tickets")
    [probabilities] = tickets.pipeline.predict_proba([TICKET])
    best = int(probabilities.argmax())
    expected = {"label": tickets.classes[best], "confidence": float(probabilities[best])}
    stored = messages_of(client, session)
    expect_equal(
        [m.get("role") for m in stored],
        ["system", "user", "assistant", "tool", "assistant"],
        "the roles of the stored messages after a turn with one tool call",
    )
    call = stored[2]["tool_calls"][0]
    expect_equal(
        call,
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "classify_ticket", "arguments": json.dumps({"text": TICKET})},
        },
        "the stored tool call (exactly what the model asked for)",
    )
    expect_equal(stored[3].get("tool_call_id"), "call_1", "the tool message's tool_call_id")
    expect_equal(
        json.loads(stored[3].get("content", "null")),
        expected,
        "the classify_ticket result (the ticket model's label and confidence, as JSON)",
    )
    expect_equal(len(model.prompts), 2, "model calls for one tool round and the answer")
    expect_equal(model.prompts[1], check_conversation(stored[:4]), "what the model got second")
    expect_equal(plain(reply["message"]), {"role": "assistant", "content": "Done."}, "the reply")


class Repeat(BaseModel):
    word: str = Field(min_length=1)
    times: int = Field(ge=1, le=5)


class Repeated(BaseModel):
    text: str


def test_a_tool_gets_its_arguments_validated_by_its_model(app, client):
    received: list[Any] = []

    def repeat(arguments: Repeat) -> Repeated:
        received.append(arguments)
        return Repeated(text=" ".join([arguments.word] * arguments.times))

    tool = given("toolbox").Tool("repeat", "Repeat a word.", Repeat, repeat)
    use_tools(app, {"repeat": tool})
    script = [("repeat", {"word": "hey", "times": "3"})], "ok"
    use_model(app, ScriptedLM(*script))
    session = new_session(client)
    say(client, session, "Repeat hey three times")
    if len(received) != 1 or not isinstance(received[0], Repeat):
        raise AssertionError(
            "the tool's function must get one instance of its arguments model (Repeat), "
            f"validated from the model's JSON; it got {shown([repr(r) for r in received])}."
        )
    expect_equal(received[0].times, 3, 'Repeat.times validated from the JSON "3"')
    stored = messages_of(client, session)
    expect_equal(
        json.loads(stored[3]["content"]), {"text": "hey hey hey"}, "the tool message's content"
    )
    for arguments, what in (
        ({"word": "hey", "times": 9}, "times 9 (over its le=5)"),
        ({"times": 2}, "no word"),
        ('{"word": "hey", "times": ', "a JSON text cut short"),
    ):
        received.clear()
        use_model(app, ScriptedLM([("repeat", arguments)], "ok"))
        session = new_session(client)
        say(client, session, "Repeat again")
        if received:
            raise AssertionError(f"the tool ran with invalid arguments ({what}): {received}.")
        stored = messages_of(client, session)
        expect_equal(stored[3].get("role"), "tool", f"the message after the call ({what})")
        tool_error_text(stored[3].get("content"), f"the tool message for arguments with {what}")


def test_bad_arguments_and_unknown_tools_are_fed_back(app, client):
    model = use_model(
        app,
        RecordingLM(
            ScriptedLM(
                [
                    ("count_words", {"text": 12}),
                    ("delete_everything", {"all": True}),
                    ("calculate", "not json at all"),
                ],
                "Sorry.",
            )
        ),
    )
    session = new_session(client)
    say(client, session, "Try some tools")
    stored = messages_of(client, session)
    expect_equal(
        [m.get("role") for m in stored],
        ["system", "user", "assistant", "tool", "tool", "tool", "assistant"],
        "the roles stored after three bad calls in one message",
    )
    expect_equal(
        [m.get("tool_call_id") for m in stored[3:6]],
        ["call_1", "call_2", "call_3"],
        "the tool_call_id of each tool message (one per call, in the calls' order)",
    )
    tool_error_text(stored[3]["content"], 'count_words with {"text": 12} (not a string)')
    unknown = tool_error_text(stored[4]["content"], "a call of the unknown tool delete_everything")
    if "delete_everything" not in unknown:
        raise AssertionError(
            f"the error for an unknown tool must name it (delete_everything): got {shown(unknown)}."
        )
    tool_error_text(stored[5]["content"], 'calculate with the arguments "not json at all"')
    expect_equal(
        model.prompts[-1][-3:],
        [as_message(message) for message in stored[3:6]],
        "the tool messages the model read in its second call",
    )


def test_a_tool_that_raises_is_fed_back(app, client):
    use_model(app, ScriptedLM([("calculate", {"a": 1, "op": "/", "b": 0})], "Cannot divide."))
    session = new_session(client)
    reply = say(client, session, "What is 1 / 0?")
    stored = messages_of(client, session)
    text = tool_error_text(stored[3].get("content"), "calculate of 1 / 0 (ZeroDivisionError)")
    if "zero" not in text.lower():
        raise AssertionError(
            f"the error of a tool that raised must say what went wrong (the exception's "
            f"message, here about division by zero): got {shown(text)}."
        )

    def broken(arguments: Any) -> Any:
        raise RuntimeError("the ticket database is down")

    use_tools(app, {"lookup": given("toolbox").Tool("lookup", "Look up.", Repeat, broken)})
    use_model(app, ScriptedLM([("lookup", {"word": "x", "times": 1})], "It failed."))
    session = new_session(client)
    say(client, session, "Look it up")
    text = tool_error_text(messages_of(client, session)[3].get("content"), "a tool that raised")
    if "the ticket database is down" not in text:
        raise AssertionError(
            'a tool raised RuntimeError("the ticket database is down"): the error must carry '
            f"the exception's message, got {shown(text)}."
        )
    expect_equal(plain(reply["message"])["content"], "Cannot divide.", "the reply after the error")


def test_each_call_of_a_message_gets_its_own_result(app, client):
    use_model(
        app,
        ScriptedLM(
            [("count_words", {"text": "a b c"}), ("calculate", {"a": 6, "op": "*", "b": 7})],
            [("count_words", {"text": "d"})],
            "Done.",
        ),
    )
    session = new_session(client)
    say(client, session, "Count and multiply")
    stored = messages_of(client, session)
    expect_equal(
        [(m.get("role"), m.get("tool_call_id")) for m in stored[2:]],
        [
            ("assistant", None),
            ("tool", "call_1"),
            ("tool", "call_2"),
            ("assistant", None),
            ("tool", "call_3"),
            ("assistant", None),
        ],
        "(role, tool_call_id) of the stored messages after two tool rounds",
    )
    expect_equal(
        [json.loads(stored[i]["content"]) for i in (3, 4, 6)],
        [{"words": 3, "characters": 5}, {"result": 42.0}, {"words": 1, "characters": 1}],
        "the results of count_words('a b c'), calculate(6 * 7) and count_words('d')",
    )


def test_the_loop_stops_at_its_bound_with_the_defined_answer(app, client):
    limit = given("chat_schemas").ROUND_LIMIT_REPLY
    for rounds in (3, 1):
        use_settings(app, max_tool_rounds=rounds)
        model = use_model(app, RecordingLM(ScriptedLM([("count_words", {"text": "again"})])))
        session = new_session(client)
        reply = say(client, session, "Loop for ever")
        expect_equal(len(model.prompts), rounds, f"model calls with max_tool_rounds={rounds}")
        expect_equal(
            plain(reply["message"]),
            {"role": "assistant", "content": limit},
            f"the reply when the model still asks for tools after {rounds} round(s)",
        )
        stored = messages_of(client, session)
        expect_equal(
            [m.get("role") for m in stored],
            ["system", "user", *["assistant", "tool"] * rounds, "assistant"],
            f"the roles stored with max_tool_rounds={rounds}",
        )
        expect_valid_conversation(stored, "the stored messages")


def test_usage_adds_up_every_model_call_of_the_turn(app, client):
    model = use_model(
        app, RecordingLM(ScriptedLM([("count_words", {"text": "a b"})], "Two words, I counted."))
    )
    session = new_session(client)
    reply = say(client, session, "How many words in: a b")
    total = model.usages[0] + model.usages[1]
    expect_equal(
        reply["usage"],
        total.as_dict(),
        "the reply's usage (the sum over the turn's two model calls)",
    )


def test_every_stored_message_has_the_shape_the_model_expects(app, client):
    use_model(app, ScriptedLM([("count_words", {"text": "x y"})], "Two."))
    session = new_session(client)
    say(client, session, "Count x y")
    stored = messages_of(client, session)
    expect_valid_conversation(stored, "GET /sessions/{id}'s messages")
    keys = {
        "system": ["role", "content"],
        "user": ["role", "content"],
        "tool": ["role", "tool_call_id", "content"],
    }
    for index, message in enumerate(stored):
        role = message.get("role")
        if role in keys:
            expect_exact_keys(message, keys[role], f"stored message {index} ({role})")
        else:
            expect_exact_keys(
                plain(message),
                ["role", "tool_calls"] if message.get("tool_calls") else ["role", "content"],
                f"stored message {index} (assistant)",
            )
    expect_equal(
        stored[2]["tool_calls"][0]["function"]["arguments"],
        '{"text": "x y"}',
        "the stored arguments (the model's JSON text, as a string)",
    )


# --- the context budget -----------------------------------------------------------------------


def history_with_tools() -> list[dict[str, Any]]:
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "count_words", "arguments": '{"text": "one two"}'},
    }
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Count the words of one two, and tell me what you did there"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_9", "content": '{"words": 2, "characters": 7}'},
        {"role": "assistant", "content": "Two words."},
        {"role": "user", "content": "Thanks"},
    ]


def test_trim_history_keeps_the_system_prompt_and_the_newest_turns_that_fit(exercise):
    trim_history = exercise("conversation").trim_history
    messages = history_with_tools()
    system, first, second, last = messages[:1], messages[1:3], messages[3:7], messages[7:]
    fits_all = prompt_tokens(messages)
    fits_two = prompt_tokens(system + second + last)
    cases = [
        (fits_all, messages, "the whole history fits exactly"),
        (fits_all - 1, system + second + last, "one token less than the whole"),
        (fits_two, system + second + last, "exactly the system prompt and the last two turns"),
        (fits_two - 1, system + last, "one token less"),
        (1, system + last, "a budget smaller than the last turn (it is kept all the same)"),
        (
            prompt_tokens(system + first + last),
            system + last,
            "room for the first turn, not the second",
        ),
        (prompt_tokens(messages[1:]), messages[1:], "a history without a system prompt"),
    ]
    for budget, expected, what in cases:
        source = messages[1:] if "without" in what else messages
        original = json.loads(json.dumps(source))
        kept = trim_history(source, budget)
        expect_equal(
            plain_all(kept),
            plain_all(expected),
            f"trim_history(budget={budget}): {what}; the roles of the messages kept were "
            f"{[m.get('role') for m in kept]}",
        )
        expect_equal(source, original, "the history after trim_history (it must not change it)")


def test_trimming_never_splits_a_tool_call_from_its_result(exercise):
    trim_history = exercise("conversation").trim_history
    messages = history_with_tools()[:6]  # ends with the tool result: the loop's next call
    for budget in range(1, prompt_tokens(messages) + 2):
        kept = trim_history(messages, budget)
        what = f"trim_history(budget={budget}) of a history ending with a tool call and its result"
        expect_valid_conversation(kept, what)
        expect_equal(kept[:1], messages[:1], f"{what}: the first message (the system prompt)")
        expect_equal(
            plain_all(kept[-3:]), plain_all(messages[-3:]), f"{what}: the newest turn, kept whole"
        )


def test_the_model_gets_a_trimmed_history_and_the_store_keeps_all(app, client):
    budget = 100
    use_settings(app, context_budget=budget)
    model = use_model(app, RecordingLM())
    session = new_session(client)
    questions = [
        "How does a service load its model?",
        "Why stream the tokens?",
        "What is a batch?",
        "How are errors shown?",
    ]
    for question in questions:
        say(client, session, question)
    stored = messages_of(client, session)
    expect_equal(len(stored), 1 + 2 * len(questions), "messages stored after four turns")
    for turn, prompt in enumerate(model.prompts):
        full = check_conversation(stored[: 2 + 2 * turn])
        expect_equal(
            prompt,
            reference_trim(full, budget),
            f"the messages the model got in turn {turn + 1} (context_budget {budget} tokens)",
        )
    # A turn with a tool call, on a budget where the last stored turn fits beside the
    # question but not beside the question and the tool's messages too: the history must
    # be trimmed again for the model's second call.
    question = {"role": "user", "content": "count_words: a b c d"}
    budget = prompt_tokens([stored[0], *stored[-2:], question]) + 1
    use_settings(app, context_budget=budget)
    model.prompts.clear()
    say(client, session, question["content"])
    stored = messages_of(client, session)
    expect_equal(len(stored), 13, "messages stored after a fifth turn with one tool call")
    expect_equal(len(model.prompts), 2, "model calls in the turn with a tool call")
    for call, end in enumerate((10, 12)):
        expect_equal(
            model.prompts[call],
            reference_trim(check_conversation(stored[:end]), budget),
            f"the messages the model got in call {call + 1} of the fifth turn "
            f"(context_budget {budget} tokens: trim before every call)",
        )


# --- bounds -------------------------------------------------------------------------------


def test_bodies_and_lengths_are_bounded(app, client):
    use_model(app, ScriptedLM("ok"))
    maximum = given("chat_schemas").MAX_CONTENT_CHARS
    session = new_session(client)
    say(client, session, "x" * maximum)
    before = messages_of(client, session)
    for route in ("messages", "messages/stream"):
        url = f"/sessions/{session}/{route}"
        for content in ("", "x" * (maximum + 1)):
            expect_validation_error(
                client.post(url, json={"content": content}, headers=ALICE), ["body", "content"]
            )
        expect_validation_error(client.post(url, json={}, headers=ALICE), ["body", "content"])
    expect_validation_error(
        client.post("/sessions", json={"system": "x" * (maximum + 1)}, headers=ALICE),
        ["body", "system"],
    )
    huge = client.post(
        f"/sessions/{session}/messages",
        content=json.dumps({"content": "x" * 100_000}),
        headers={**ALICE, "content-type": "application/json"},
    )
    expect_status(huge, 413)
    expect_equal(messages_of(client, session), before, "the messages after the refused requests")


def test_a_full_session_refuses_new_messages_with_a_409(app, client):
    use_settings(app, max_session_messages=5)
    use_model(app, ScriptedLM("ok"))
    session = new_session(client)
    say(client, session, "one")
    say(client, session, "two")  # 5 messages now: system and two turns
    before = messages_of(client, session)
    for route in ("messages", "messages/stream"):
        response = client.post(
            f"/sessions/{session}/{route}", json={"content": "three"}, headers=ALICE
        )
        expect_status(response, 409)
        body = expect_json(response, 409)
        if not isinstance(body, dict) or not str(body.get("detail", "")).strip():
            raise AssertionError(
                f"a 409 must say why in its detail; got {shown_body(response.text)}."
            )
    expect_equal(messages_of(client, session), before, "the messages of the full session")


def test_a_user_holds_a_bounded_number_of_sessions(app, client):
    use_settings(app, max_sessions=2)
    first = new_session(client)
    new_session(client)
    refused = client.post("/sessions", json={}, headers=ALICE)
    body = expect_json(refused, 409)
    if not isinstance(body, dict) or not str(body.get("detail", "")).strip():
        raise AssertionError(f"a 409 must say why in its detail; got {shown_body(refused.text)}.")
    new_session(client, headers=BOB)  # each user has their own allowance
    expect_status(client.delete(f"/sessions/{first}", headers=ALICE), 204)
    new_session(client)


# --- streaming ----------------------------------------------------------------------------


def test_the_stream_sends_tool_events_then_tokens_then_done(app, client):
    script = ([("count_words", {"text": "a b c"})], "Three words there.")
    use_model(app, ScriptedLM(*script))
    session = new_session(client)
    events = stream_events(client, session, "Count a b c")
    names = [name for name, _ in events]
    expect_equal(
        names,
        ["tool", "token", "token", "token", "done"],
        "the event types of the stream, in order",
    )
    stored = messages_of(client, session)
    expect_exact_keys(events[0][1], ["id", "name", "arguments", "content"], "the tool event's data")
    expect_equal(
        events[0][1],
        {
            "id": "call_1",
            "name": "count_words",
            "arguments": '{"text": "a b c"}',
            "content": stored[3]["content"],
        },
        "the tool event's data (the call, and the content of its stored tool message)",
    )
    tokens = [data.get("token") if isinstance(data, dict) else data for _, data in events[1:4]]
    expect_equal(tokens, ["Three", " words", " there."], 'the "token" events\' tokens')
    # The same turn without streaming, on a fresh model: the same reply and history.
    use_model(app, ScriptedLM(*script))
    other = new_session(client)
    reply = say(client, other, "Count a b c")
    expect_equal(events[-1][1], reply, "the done event's data (the reply, as the other route)")
    expect_equal(stored, messages_of(client, other), "the stored messages: streamed or not")


class HeldAnswerLM(ScriptedLM):
    """Calls a tool first; the answer's call waits until the test lets it go on."""

    def __init__(self) -> None:
        super().__init__([("count_words", {"text": "a b"})], "Two words.")
        self.go = threading.Event()
        self.waiting = threading.Event()

    async def stream_complete(self, messages: Any, **options: Any) -> AsyncIterator[Any]:
        if self.calls:  # the second call: the answer, after the tool ran
            self.waiting.set()
            deadline = time.monotonic() + GATE_TIMEOUT
            while not self.go.is_set():
                if time.monotonic() > deadline:
                    raise TimeoutError("HeldAnswerLM: the test never let the answer go on")
                await asyncio.sleep(0.005)
        async for delta in super().stream_complete(messages, **options):
            yield delta


def test_the_tool_event_arrives_before_the_answer_is_written(app, live_server):
    model = use_model(app, HeldAnswerLM())
    with httpx.Client(base_url=live_server, timeout=GATE_TIMEOUT + 2) as http:
        session = new_session(http)
    with (
        httpx.Client(base_url=live_server, timeout=GATE_TIMEOUT + 2) as http,
        connect_sse(
            http,
            "POST",
            f"/sessions/{session}/messages/stream",
            json={"content": "Count a b"},
            headers=ALICE,
        ) as source,
    ):
        expect_status(source.response, 200)
        events = source.iter_sse()
        try:
            first = next(events)
        except (httpx.HTTPError, StopIteration) as exc:
            raise AssertionError(
                "The tool event never reached the client while the model was still held "
                f"before its answer ({type(exc).__name__}). Yield each event as it happens; "
                "do not collect the turn first."
            ) from None
        expect_equal(first.event, "tool", "the first event's type")
        # The event may reach us a moment before the service asks the model for its answer:
        # wait for that call (the model holds it until we let go), never assume it.
        if not model.waiting.wait(GATE_TIMEOUT):
            raise OutOfTime(
                f"the tool event came, but the model was not asked to answer within "
                f"{GATE_TIMEOUT:g} s of it."
            )
        model.go.set()
        rest = [sse.event for sse in events]
    expect_equal(rest, ["token", "token", "done"], "the events after the tool event")
