"""Checks for the graded tests, whose failures read as sentences for a learner.

Each check says what request was sent, what was expected and what came back:

    body = expect_json(client.post("/analyze", json={"text": "hi"}))
    expect_equal(body["words"], 1, "the word count of 'hi'")
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx2 as httpx

MAX_SHOWN = 300  # characters of a body shown in a message
# Headers every client sends: a message names only those the test chose to set.
ROUTINE_HEADERS = frozenset(
    {"host", "accept", "accept-encoding", "connection", "user-agent", "content-length"}
)


class Mismatch(AssertionError):
    """A failed expectation that names its observable symptom, for grouping in reports.

    Failures of several tests that share one `symptom` (the same route answering the
    same wrong status, say) are reported once, first, as the likely cause.
    """

    def __init__(self, message: str, symptom: str = "") -> None:
        super().__init__(message)
        self.symptom = symptom


class OutOfTime(AssertionError):
    """A wait of the test's own ran out: a job that never ended, a server that never served.

    Raise it (not a plain AssertionError) from a test's wait loops. The grader then runs
    the test once more, on its own, before it counts the failure: on a busy machine a
    correct solution can be slow. Timeouts of httpx, openai and `Future.result` count so
    too, without this class.
    """


def shown(value: Any) -> str:
    """A short, readable rendering of a value for a message; strings are quoted.

    Quoting makes a missing space or an empty string visible: `got " token"`.
    """
    text = json.dumps(value, default=repr, ensure_ascii=False)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def shown_body(text: str) -> str:
    """A response body as it came, shortened: `(empty)` when there is none."""
    if not text:
        return "(empty)"
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def route(response: httpx.Response) -> str:
    """`POST /analyze`: the method and path of the request behind a response."""
    return f"{response.request.method} {response.request.url.path}"


def describe(response: httpx.Response) -> str:
    """`POST /analyze?top=2 with body {"text": "hi"}`: the request behind a response.

    Headers the test set itself (an API key, say) are named too.
    """
    request = response.request
    target = request.url.raw_path.decode("ascii", errors="replace")
    text = f"{request.method} {target}"
    headers = [
        f"{name}: {value}"
        for name, value in request.headers.items()
        if name.lower() not in ROUTINE_HEADERS
        and not (name.lower() == "content-type" and value == "application/json")
    ]
    if headers:
        text += " with headers " + ", ".join(headers)
    try:
        body = request.content
    except httpx.RequestNotRead:  # streamed to a real server, which keeps no copy
        return text + f" {'and' if headers else 'with'} a streamed body"
    if body:
        text += f" {'and' if headers else 'with'} body "
        text += shown_body(body.decode("utf-8", errors="replace"))
    return text


def expect_status(response: httpx.Response, status: int) -> None:
    """The response has `status`; otherwise say what came back instead."""
    if response.status_code != status:
        raise Mismatch(
            f"{describe(response)} answered {response.status_code}, expected {status}. "
            f"Response body: {shown_body(response.text)}",
            symptom=f"{route(response)} answers {response.status_code} where {status} is expected",
        )


def expect_json(response: httpx.Response, status: int = 200) -> Any:
    """The response has `status` and a JSON body; return that body."""
    expect_status(response, status)
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        raise Mismatch(
            f"{describe(response)} answered with content type {content_type or '(none)'}, "
            "expected application/json.",
            symptom=f"{route(response)} answers with content type "
            f"{content_type or '(none)'}, not application/json",
        )
    return response.json()


def expect_equal(actual: Any, expected: Any, what: str) -> None:
    """`actual == expected`, where `what` names the value in the learner's terms."""
    if actual != expected:
        raise AssertionError(f"{what}: expected {shown(expected)}, got {shown(actual)}.")


def expect_fields(body: Any, expected: Mapping[str, Any], what: str) -> None:
    """`body` is a JSON object holding at least `expected` (key by key)."""
    if not isinstance(body, dict):
        raise AssertionError(f"{what}: expected a JSON object, got {shown(body)}.")
    missing = [key for key in expected if key not in body]
    if missing:
        raise AssertionError(
            f"{what}: the field(s) {', '.join(missing)} are missing. Got {shown(body)}."
        )
    wrong = [
        f"{key} = {shown(body[key])} (expected {shown(value)})"
        for key, value in expected.items()
        if body[key] != value
    ]
    if wrong:
        raise AssertionError(f"{what}: " + "; ".join(wrong) + ".")


def expect_exact_keys(body: Any, keys: Sequence[str], what: str) -> None:
    """`body` is a JSON object with exactly these keys: nothing missing, nothing extra."""
    if not isinstance(body, dict):
        raise AssertionError(f"{what}: expected a JSON object, got {shown(body)}.")
    missing = sorted(set(keys) - set(body))
    extra = sorted(set(body) - set(keys))
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if extra:
            problems.append(f"unexpected {', '.join(extra)}")
        raise AssertionError(
            f"{what}: expected exactly the fields {', '.join(keys)}; "
            + " and ".join(problems)
            + f". Got {shown(body)}."
        )


def expect_validation_error(
    response: httpx.Response, loc: Sequence[str | int], error_type: str | None = None
) -> dict[str, Any]:
    """A 422 in FastAPI's shape, with an error at `loc` (of `error_type`); return it."""
    body = expect_json(response, 422)
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, list) or not all(isinstance(e, dict) for e in detail):
        raise AssertionError(
            f"{describe(response)} answered 422, but the body is not FastAPI's validation "
            f'error shape {{"detail": [{{"loc": ..., "msg": ..., "type": ...}}]}}. '
            f"Got {shown(body)}."
        )
    for error in detail:
        if list(error.get("loc", [])) == list(loc):
            if error_type is not None and error.get("type") != error_type:
                raise AssertionError(
                    f"{describe(response)}: the error at {list(loc)} has type "
                    f"{error.get('type')!r}, expected {error_type!r}. Got {shown(error)}."
                )
            return error
    locations = [error.get("loc") for error in detail]
    raise AssertionError(
        f"{describe(response)}: expected a validation error at {list(loc)}, "
        f"but the errors are at {shown(locations)}."
    )
