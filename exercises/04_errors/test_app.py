"""Graded tests for step 04. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/04_errors`. Points and hints live in course.toml; the
fixtures come from the grader: `app` is the app in your app.py, freshly imported for
each test (with your errors.py and registry.py), and `client` is a `TestClient` on it,
inside its lifespan (so your start-up code has run). `exercise("app")` imports your
app.py afresh. `http_client` talks to your app under a real uvicorn server (the grader's
`app_url`), where an exception of yours is the 500 a client gets.

Every test of a 4xx first shows that a valid request succeeds, then checks the status
AND the error body: {"error": {"code": ..., "message": ..., "details": [...]}}.
"""

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autograder.expect import (
    describe,
    expect_equal,
    expect_json,
    expect_status,
    shown,
    shown_body,
)
from autograder.served import served
from coursekit.datasets import WINE_FEATURES, load_wine
from coursekit.models import LoadedModel, load_model

# Loaded once, when this file is collected, so no test pays for it; the first test still
# pays for importing your app.py (and skops).
REFERENCE: dict[str, LoadedModel] = {name: load_model(name) for name in ("tickets", "wine")}

BODY_LIMIT = 1_048_576  # bytes: MAX_BODY_SIZE in the statement
MAX_BATCH = 100
TICKET = {"text": "I was charged twice for my subscription this month"}
JSON_HEADERS = {"content-type": "application/json"}
ERROR_FIELDS = ["code", "message", "details"]
DETAIL_FIELDS = ["loc", "message", "type"]
PREDICTION_ROUTES = [
    "/tickets/predict",
    "/tickets/predict/batch",
    "/wine/predict",
    "/wine/predict/batch",
]


def a_wine() -> dict[str, float]:
    row = load_wine().features[0]
    return {name: float(value) for name, value in zip(WINE_FEATURES, row, strict=True)}


@pytest.fixture
def http_client(app_url: str) -> Iterator[httpx.Client]:
    """Your app under a real uvicorn server (the grader's `app_url`): an exception of yours
    is the 500 a client gets, not an error raised into the test."""
    with httpx.Client(base_url=app_url, timeout=None) as http:
        yield http


def post_raw(client: Any, path: str, content: bytes | Iterator[bytes]) -> httpx.Response:
    """POST bytes as JSON: how a test sends NaN, broken JSON or a streamed body."""
    return client.post(path, content=content, headers=JSON_HEADERS)


def expect_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response has `status` and the service's one error body with this `code`."""
    body = expect_json(response, status)
    what = f"the body of {describe(response)} ({status})"
    if not isinstance(body, dict) or list(body) != ["error"]:
        raise AssertionError(
            f'{what}: expected exactly one field, "error"; got {shown(body)}. Every error '
            'body is {"error": {"code": ..., "message": ..., "details": [...]}}.'
        )
    error = body["error"]
    if not isinstance(error, dict) or sorted(error) != sorted(ERROR_FIELDS):
        raise AssertionError(
            f'{what}: "error" must hold exactly code, message and details; got {shown(error)}.'
        )
    expect_equal(error["code"], code, f"{what}: error.code")
    if not isinstance(error["message"], str) or not error["message"].strip():
        raise AssertionError(f"{what}: error.message must be a non-empty sentence; got {error}.")
    details = error["details"]
    if not isinstance(details, list):
        raise AssertionError(f"{what}: error.details must be a list; got {shown(details)}.")
    if status != 422 and details != []:
        raise AssertionError(
            f"{what}: error.details must be empty ([]) for an error that is not a validation "
            f"error; got {shown(details)}."
        )
    for detail in details:
        if not isinstance(detail, dict) or sorted(detail) != sorted(DETAIL_FIELDS):
            raise AssertionError(
                f"{what}: each detail holds exactly loc, message and type (never the "
                f"refused input); got {shown(detail)}."
            )
    return error


def expect_invalid(
    response: httpx.Response, loc: list[str | int], error_type: str | None = None
) -> dict[str, Any]:
    """A 422 in the service's error shape, with a detail at `loc` (of `error_type`)."""
    error = expect_error(response, 422, "validation_error")
    for detail in error["details"]:
        if detail["loc"] == loc:
            if error_type is not None and detail["type"] != error_type:
                raise AssertionError(
                    f"{describe(response)}: the detail at {loc} has type {detail['type']!r}, "
                    f"expected {error_type!r}. Got {shown(detail)}."
                )
            if not isinstance(detail["message"], str) or not detail["message"]:
                raise AssertionError(f"the detail at {loc} has no message: {shown(detail)}")
            return detail
    raise AssertionError(
        f"{describe(response)}: expected a detail at {loc}, but the details are at "
        f"{shown([detail['loc'] for detail in error['details']])}."
    )


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with spaces to exactly `size` bytes: still valid JSON."""
    data = json.dumps(body).encode()
    return data + b" " * (size - len(data))


def test_a_missing_field_is_a_422_in_the_error_shape(client):
    expect_json(client.post("/tickets/predict", json=TICKET))
    detail = expect_invalid(
        client.post("/tickets/predict", json={"txt": "typo"}), ["body", "text"], "missing"
    )
    expect_equal(detail["message"], "Field required", "the message of the missing-field detail")


def test_wrong_types_and_blank_text_are_422s(client):
    expect_json(client.post("/tickets/predict", json=TICKET))
    expect_invalid(client.post("/tickets/predict", json={"text": 42}), ["body", "text"])
    expect_invalid(client.post("/tickets/predict", json={"text": "   "}), ["body", "text"])
    wine = {**a_wine(), "alcohol": "strong"}
    expect_invalid(client.post("/wine/predict", json=wine), ["body", "alcohol"], "float_parsing")
    error = expect_invalid(client.post("/tickets/predict", json=[]), ["body"])
    expect_equal(len(error), 3, "the number of fields of a detail")
    # A parameter, not only a body: step 03's /models/{name} takes only the two names.
    expect_invalid(client.get("/models/sentiment"), ["path", "name"], "literal_error")


def test_each_problem_gets_its_own_detail(client):
    expect_json(client.post("/wine/predict", json=a_wine()))
    wine = {**a_wine(), "ash": "x", "hue": None}
    del wine["alcohol"]
    response = client.post("/wine/predict", json=wine)
    error = expect_error(response, 422, "validation_error")
    expected = [
        {"loc": ["body", "alcohol"], "message": "Field required", "type": "missing"},
        {
            "loc": ["body", "ash"],
            "message": "Input should be a valid number, unable to parse string as a number",
            "type": "float_parsing",
        },
        {"loc": ["body", "hue"], "message": "Input should be a valid number", "type": "float_type"},
    ]
    # In any order: one detail per problem, each with the error's own loc, msg and type.
    expect_equal(
        sorted(error["details"], key=json.dumps),
        sorted(expected, key=json.dumps),
        f"the details of {describe(response)}",
    )


def test_empty_and_oversized_batches_are_422s(client):
    tickets = [{"text": f"ticket number {index}"} for index in range(MAX_BATCH)]
    body = expect_json(client.post("/tickets/predict/batch", json={"instances": tickets}))
    expect_equal(len(body.get("predictions", [])), MAX_BATCH, "predictions for 100 tickets")
    for path, item in (("/tickets/predict/batch", TICKET), ("/wine/predict/batch", a_wine())):
        expect_invalid(
            client.post(path, json={"instances": []}), ["body", "instances"], "too_short"
        )
        too_many = {"instances": [item] * (MAX_BATCH + 1)}
        expect_invalid(client.post(path, json=too_many), ["body", "instances"], "too_long")


def expect_finite_number_errors(response: httpx.Response, features: list[str]) -> None:
    """A 422 with a finite_number detail at ["body", feature] for every one of `features`."""
    error = expect_error(response, 422, "validation_error")
    found = {
        detail["loc"][-1]
        for detail in error["details"]
        if detail["type"] == "finite_number" and detail["loc"][:1] == ["body"]
    }
    missing = [feature for feature in features if feature not in found]
    if missing:
        raise AssertionError(
            f"{describe(response)} refused the body, but has no finite_number detail at "
            f"{shown([['body', feature] for feature in missing])}: every feature that holds "
            "NaN or infinity gets its own detail."
        )


def test_nan_and_infinity_are_422s_not_500s(http_client):
    wine = json.dumps(a_wine())
    expect_json(post_raw(http_client, "/wine/predict", wine.encode()))
    # Python's JSON parser reads these tokens as floats; 1e999 overflows to infinity.
    tokens = {"alcohol": "NaN", "ash": "Infinity", "hue": "-Infinity", "proline": "1e999"}
    bad = wine
    for feature, token in tokens.items():
        value = json.dumps(a_wine()[feature])
        bad = bad.replace(f'"{feature}": {value}', f'"{feature}": {token}')
    expect_finite_number_errors(post_raw(http_client, "/wine/predict", bad.encode()), list(tokens))
    # All 13 features at once, not only the first: one detail for each.
    # json.dumps writes these floats as the bare tokens NaN, Infinity and -Infinity.
    for value in (float("nan"), float("inf"), float("-inf")):
        body = json.dumps(dict.fromkeys(WINE_FEATURES, value)).encode()
        response = post_raw(http_client, "/wine/predict", body)
        expect_finite_number_errors(response, list(WINE_FEATURES))
    nan_hue = wine.replace('"hue": 1.04', '"hue": NaN')
    batch = f'{{"instances": [{wine}, {nan_hue}]}}'
    expect_invalid(
        post_raw(http_client, "/wine/predict/batch", batch.encode()),
        ["body", "instances", 1, "hue"],
        "finite_number",
    )
    # A NaN where a string belongs: the error's input is NaN, and must not become a 500.
    expect_invalid(post_raw(http_client, "/tickets/predict", b'{"text": NaN}'), ["body", "text"])


def test_a_body_that_is_not_json_is_a_422_and_bad_bytes_a_400(client):
    expect_json(client.post("/tickets/predict", json=TICKET))
    expect_invalid(post_raw(client, "/tickets/predict", b"text=hello"), ["body", 0], "json_invalid")
    expect_error(post_raw(client, "/tickets/predict", b'{"text": "\xff\xfe"}'), 400, "bad_request")


def test_http_errors_have_the_same_shape(client):
    expect_json(client.post("/tickets/predict", json=TICKET))
    expect_error(client.get("/no/such/route"), 404, "not_found")
    response = client.get("/tickets/predict")
    error = expect_error(response, 405, "method_not_allowed")
    expect_equal(error["details"], [], "the details of a 405")
    expect_equal(response.headers.get("allow"), "POST", "the Allow header of the 405")


def test_any_other_http_error_has_the_same_shape(app_server):
    # Two routes added for this test only, raising what a route of yours might raise: a 409
    # with a Retry-After header and a 404 (coursekit/app_setups.py).
    with served(app_server, setup=["coursekit.app_setups:http_errors"]) as client:
        expect_json(client.post("/tickets/predict", json=TICKET))
        response = client.post("/test-only/conflict")
        expect_error(response, 409, "http_error")
        expect_equal(response.headers.get("retry-after"), "5", "the Retry-After header of the 409")
        expect_error(client.get("/test-only/missing"), 404, "not_found")


def expect_not_loaded(response: httpx.Response, model: str) -> None:
    """A 503 in the error body, code model_not_loaded, whose message names `model`."""
    error = expect_error(response, 503, "model_not_loaded")
    if model not in error["message"]:
        raise AssertionError(
            f"{describe(response)}: the message of the 503 must name the model that is not "
            f"loaded ({model!r}); got {shown(error['message'])}."
        )


def test_predicting_before_start_up_is_a_503(app):
    requests = (
        ("tickets", "/tickets/predict", TICKET),
        ("tickets", "/tickets/predict/batch", {"instances": [TICKET]}),
        ("wine", "/wine/predict", a_wine()),
        ("wine", "/wine/predict/batch", {"instances": [a_wine()]}),
    )
    # Without `with`, the lifespan never runs: app.state has no models at all.
    client = TestClient(app, raise_server_exceptions=False)
    for model, path, body in requests:
        expect_not_loaded(client.post(path, json=body), model)
    expect_not_loaded(client.get("/models/tickets"), "tickets")
    expect_not_loaded(client.get("/models/wine"), "wine")
    # Bad input is still the client's fault, model or no model.
    expect_invalid(client.post("/tickets/predict", json={"text": ""}), ["body", "text"])
    with TestClient(app) as started:
        expect_json(started.post("/tickets/predict", json=TICKET))
    # After shut-down the models are gone again, as in step 03.
    for model, path, body in requests[::2]:
        expect_not_loaded(client.post(path, json=body), model)


# Your lifespan's `load_model` (in registry.py) replaced by one of the course's, which fails
# for one model as a missing or broken file would (coursekit/failing_loads.py).
WINE_FILE_MISSING = [("registry:load_model", "coursekit.failing_loads:wine_file_missing")]
TICKETS_FILE_CORRUPT = [("registry:load_model", "coursekit.failing_loads:tickets_file_corrupt")]


def test_a_model_that_fails_to_load_is_a_503_not_a_crash(app_server):
    with served(app_server, patches=WINE_FILE_MISSING) as client:
        expect_json(client.post("/tickets/predict", json=TICKET))
        health = expect_json(client.get("/health"))
        expect_equal(
            health.get("models"), {"tickets": True, "wine": False}, "/health after wine failed"
        )
        expect_error(client.post("/wine/predict", json=a_wine()), 503, "model_not_loaded")
        batch = {"instances": [a_wine()]}
        expect_error(client.post("/wine/predict/batch", json=batch), 503, "model_not_loaded")
    # Another model, another kind of failure (ModelFileCorrupt, neither an OSError nor a
    # ValueError): start-up still goes on.
    with served(app_server, patches=TICKETS_FILE_CORRUPT) as client:
        expect_json(client.post("/wine/predict", json=a_wine()))
        health = expect_json(client.get("/health"))
        expect_equal(
            health.get("models"),
            {"tickets": False, "wine": True},
            "/health after tickets failed with an exception that is not an OSError",
        )
        expect_error(client.post("/tickets/predict", json=TICKET), 503, "model_not_loaded")
        batch = {"instances": [TICKET]}
        expect_error(client.post("/tickets/predict/batch", json=batch), 503, "model_not_loaded")
        expect_error(client.get("/models/tickets"), 503, "model_not_loaded")
        expect_json(client.get("/models/wine"))


def test_a_model_that_fails_to_load_is_logged(app_server, app_log):
    with app_server({}, patches=WINE_FILE_MISSING):
        pass
    # app_log(): what your app's loggers logged at WARNING or above (uvicorn's left out).
    if not any(line.level >= logging.WARNING for line in app_log()):
        raise AssertionError(
            "Start-up with a wine model that fails to load (OSError: wine.skops: no such "
            "file) logged nothing at level WARNING or above. Log the failure (for instance "
            "logger.exception(...)) before going on without that model."
        )


def test_a_declared_body_over_the_limit_is_a_413(client):
    exactly = padded(TICKET, BODY_LIMIT)
    expect_json(post_raw(client, "/tickets/predict", exactly))
    over = padded(TICKET, BODY_LIMIT + 1)
    # Content-Length says it is too big: Starlette answers before any handler runs.
    response = post_raw(client, "/tickets/predict", over)
    expect_status(response, 413)


def test_a_streamed_body_over_the_limit_is_a_413_in_the_error_shape(client):
    chunk = 64 * 1024

    def stream(data: bytes) -> Iterator[bytes]:
        # A generator has no length: the body goes out chunked, without Content-Length.
        for start in range(0, len(data), chunk):
            yield data[start : start + chunk]

    expect_json(post_raw(client, "/tickets/predict", stream(padded(TICKET, BODY_LIMIT))))
    over = stream(padded({"instances": [TICKET]}, BODY_LIMIT + 1))
    expect_error(post_raw(client, "/tickets/predict/batch", over), 413, "content_too_large")


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Bodies that look like the real ones, so the tests get past the first error.
TICKET_LIKE = st.fixed_dictionaries({}, optional={"text": JSON_VALUES, "language": JSON_VALUES})
WINE_LIKE = st.fixed_dictionaries(
    {name: st.floats() for name in WINE_FEATURES[:-3]},
    optional={name: JSON_VALUES for name in WINE_FEATURES[-3:]},
)
BODIES = st.one_of(
    JSON_VALUES,
    TICKET_LIKE,
    WINE_LIKE,
    st.fixed_dictionaries({"instances": st.lists(TICKET_LIKE | WINE_LIKE, max_size=3)}),
)


def test_random_bodies_never_cause_a_500(http_client):
    expect_json(http_client.post("/tickets/predict", json=TICKET))

    @settings(
        derandomize=True,
        database=None,
        # Enough to meet bodies of every kind (a handler that answers 400, a route that
        # trusts its input); the NaN and the per-feature cases have their own test.
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(path=st.sampled_from(PREDICTION_ROUTES), body=BODIES)
    def never_a_500(path: str, body: Any) -> None:
        # json.dumps writes NaN and Infinity as bare tokens, as a sloppy http_client would.
        response = post_raw(http_client, path, json.dumps(body).encode())
        if response.status_code == 200:
            return
        if response.status_code != 422:
            raise AssertionError(
                f"{describe(response)} answered {response.status_code}: a bad body is a "
                f"422, never a {response.status_code}. Body: {shown_body(response.text)}"
            )
        expect_error(response, 422, "validation_error")

    never_a_500()


def test_openapi_documents_the_error_responses(client):
    schema = expect_json(client.get("/openapi.json"))
    components = schema.get("components", {}).get("schemas", {})
    for path in PREDICTION_ROUTES:
        responses = schema.get("paths", {}).get(path, {}).get("post", {}).get("responses", {})
        for status in ("400", "413", "422", "503"):
            content = responses.get(status, {}).get("content", {}).get("application/json", {})
            ref = content.get("schema", {}).get("$ref", "")
            name = ref.rsplit("/", 1)[-1]
            if not name or sorted(components.get(name, {}).get("properties", {})) != ["error"]:
                raise AssertionError(
                    f"/openapi.json: the {status} response of POST {path} should be documented "
                    f'with the error body (a model with one field, "error"); got '
                    f"{shown(responses.get(status))}."
                )
        too_large = responses.get("413", {}).get("content", {})
        if "text/plain" not in too_large:
            raise AssertionError(
                f"/openapi.json: the 413 response of POST {path} should also be documented "
                "as text/plain, what Starlette sends for a declared body over the limit; got "
                f"{shown(responses.get('413'))}."
            )
