"""Graded tests for step 03. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/03_serving_model`. Points and hints live in course.toml;
the fixtures come from the grader: `app` is the app in your app.py, freshly imported
for each test, and `client` is a `TestClient` on it, inside its lifespan (so your
start-up code has run). `exercise("app")` imports your app.py afresh.

The tests load the course's models themselves (`REFERENCE`, below) and compare your
answers with what the models say: any correct implementation passes.
"""

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient

from autograder.expect import (
    expect_equal,
    expect_exact_keys,
    expect_json,
    expect_validation_error,
    shown,
)
from autograder.served import served
from coursekit.datasets import WINE_FEATURES, load_wine
from coursekit.models import (
    LoadedModel,
    load_count,
    load_model,
    reset_load_counts,
)

# Loaded once, when this file is collected: the answers your service must give.
REFERENCE: dict[str, LoadedModel] = {name: load_model(name) for name in ("tickets", "wine")}

TICKETS = [
    "I was charged twice for my subscription this month",
    "The app crashes every time I open the settings page",
    "I forgot my password and cannot log in to my account",
    "My parcel has not arrived and the tracking has not moved",
    "My invoice shows the wrong address and the package went there",
    "Can I change the email on my profile after the update?",
    "refund please, the courier lost it",
    "hello",
]
# Real wines of the data set, of all three classes, some of them hard to classify.
WINE_ROWS = [0, 68, 38, 134, 83, 130]
MAX_BATCH = 100  # instances per batch request, MAX_BATCH_SIZE in the statement
MAX_BODY_SIZE = 1_048_576  # bytes: app.py's limit on a request body
JSON_HEADERS = {"content-type": "application/json"}
# The statement says "do not round": a confidence is compared exactly with the float the
# model gives for the same call. Only a batch compared with single requests allows this
# much: the wine model's float noise between one call of many rows and one of a single row
# (about 1e-16), far below any rounding.
MODEL_NOISE = 1e-12
METADATA_FIELDS = [
    "name",
    "version",
    "task",
    "classes",
    "metrics",
    "trained_at",
    "library_versions",
]


def wines() -> list[dict[str, float]]:
    data = load_wine()
    return [
        {name: float(value) for name, value in zip(WINE_FEATURES, data.features[row], strict=True)}
        for row in WINE_ROWS
    ]


def expected_predictions(name: str, inputs: list[Any]) -> list[tuple[str, float]]:
    """What the model itself says, called once on all `inputs` (as a batch route calls it)."""
    pipeline = REFERENCE[name].pipeline
    labels = [str(label) for label in pipeline.predict(inputs)]
    confidences = [float(row.max()) for row in pipeline.predict_proba(inputs)]
    return list(zip(labels, confidences, strict=True))


def expected_singles(name: str, inputs: list[Any]) -> list[tuple[str, float]]:
    """What the model says for each input alone, called on one row (as a single route)."""
    return [expected_predictions(name, [one])[0] for one in inputs]


def wine_inputs(instances: list[dict[str, float]]) -> list[list[float]]:
    return [[wine[name] for name in WINE_FEATURES] for wine in instances]


def expect_prediction(
    body: Any, label: str, confidence: float, what: str, tolerance: float = 0.0
) -> None:
    """`body` is {"label", "confidence"} with this label and exactly this confidence."""
    expect_exact_keys(body, ["label", "confidence"], what)
    expect_equal(body["label"], label, f"{what}: the label")
    got = body["confidence"]
    if (
        isinstance(got, bool)
        or not isinstance(got, int | float)
        or abs(got - confidence) > tolerance
    ):
        raise AssertionError(
            f"{what}: the confidence should be the probability the model gives its label "
            f"{label!r}, exactly {confidence!r} (not rounded); got {shown(got)}."
        )


def test_health_reports_which_models_are_loaded(app):
    # Without `with`, TestClient does not run the lifespan: nothing is loaded yet.
    body = expect_json(TestClient(app).get("/health"))
    expect_equal(
        body,
        {"status": "ok", "models": {"tickets": False, "wine": False}},
        "GET /health before start-up",
    )
    with TestClient(app) as client:
        body = expect_json(client.get("/health"))
    expect_equal(
        body,
        {"status": "ok", "models": {"tickets": True, "wine": True}},
        "GET /health after start-up",
    )
    # Only the wine model in app.state.models: each value says whether *that* model is
    # loaded, not whether any model is.
    app.state.models = {"wine": REFERENCE["wine"]}
    body = expect_json(TestClient(app).get("/health"))
    expect_equal(
        body,
        {"status": "ok", "models": {"tickets": False, "wine": True}},
        'GET /health when app.state.models holds only "wine"',
    )


def test_ticket_labels_are_the_models_predictions(client):
    for text, (label, _) in zip(TICKETS, expected_singles("tickets", TICKETS), strict=True):
        body = expect_json(client.post("/tickets/predict", json={"text": text}))
        expect_equal(body.get("label"), label, f'the label of POST /tickets/predict for "{text}"')


def test_ticket_confidence_is_the_probability_of_the_label(client):
    expected = expected_singles("tickets", TICKETS)
    for text, (label, confidence) in zip(TICKETS, expected, strict=True):
        body = expect_json(client.post("/tickets/predict", json={"text": text}))
        expect_prediction(body, label, confidence, f'POST /tickets/predict for "{text}"')


def test_ticket_batch_keeps_the_order_and_matches_single_predictions(client):
    batch = {"instances": [{"text": text} for text in TICKETS]}
    body = expect_json(client.post("/tickets/predict/batch", json=batch))
    expect_exact_keys(body, ["predictions"], "POST /tickets/predict/batch")
    predictions = body["predictions"]
    expect_equal(len(predictions), len(TICKETS), "the number of predictions for 8 tickets")
    expected = expected_predictions("tickets", TICKETS)
    for index, (prediction, (label, confidence)) in enumerate(
        zip(predictions, expected, strict=True)
    ):
        expect_prediction(prediction, label, confidence, f"batch prediction {index}")
    for text, prediction in zip(TICKETS, predictions, strict=True):
        single = expect_json(client.post("/tickets/predict", json={"text": text}))
        expect_prediction(
            single,
            prediction["label"],
            prediction["confidence"],
            f'the batch\'s "{text}" alone',
            tolerance=MODEL_NOISE,
        )


def test_wine_predictions_are_the_models_predictions(client):
    instances = wines()
    expected = expected_singles("wine", wine_inputs(instances))
    for row, wine, (label, confidence) in zip(WINE_ROWS, instances, expected, strict=True):
        body = expect_json(client.post("/wine/predict", json=wine))
        expect_prediction(body, label, confidence, f"POST /wine/predict for wine {row}")


def test_wine_batch_keeps_the_order_and_matches_single_predictions(client):
    instances = wines()
    body = expect_json(client.post("/wine/predict/batch", json={"instances": instances}))
    expect_exact_keys(body, ["predictions"], "POST /wine/predict/batch")
    predictions = body["predictions"]
    expect_equal(
        len(predictions), len(instances), f"the number of predictions for {len(instances)} wines"
    )
    expected = expected_predictions("wine", wine_inputs(instances))
    for index, (prediction, (label, confidence)) in enumerate(
        zip(predictions, expected, strict=True)
    ):
        expect_prediction(prediction, label, confidence, f"batch prediction {index}")
    for row, wine, prediction in zip(WINE_ROWS, instances, predictions, strict=True):
        single = expect_json(client.post("/wine/predict", json=wine))
        expect_prediction(
            single,
            prediction["label"],
            prediction["confidence"],
            f"the batch's wine {row} alone",
            tolerance=MODEL_NOISE,
        )


def test_a_batch_calls_the_model_once(app_server):
    batches_sent = [
        ("tickets", "/tickets/predict/batch", [{"text": text} for text in TICKETS]),
        ("wine", "/wine/predict/batch", wines()),
    ]
    # A route added for this test only (coursekit/app_setups.py): the rows each call of
    # each model your app loaded received.
    with served(app_server, setup=["coursekit.app_setups:model_calls"]) as client:
        for name, path, instances in batches_sent:
            before = len(expect_json(client.get("/test-only/model-calls")).get(name, []))
            expect_json(client.post(path, json={"instances": instances}))
            calls = expect_json(client.get("/test-only/model-calls")).get(name, [])[before:]
            if not calls or any(rows != len(instances) for rows in calls):
                raise AssertionError(
                    f"POST {path} with {len(instances)} instances: the {name} model should "
                    f"be called once with all {len(instances)} rows; its calls received "
                    f"{shown(calls)} rows. Call predict_proba once for the whole batch, not "
                    "once per instance."
                )


def test_the_models_load_at_startup_not_at_import(exercise):
    reset_load_counts()
    module = exercise("app")
    for name in REFERENCE:
        expect_equal(load_count(name), 0, f"the loads of the {name} model when app.py is imported")
    with TestClient(module.app) as client:
        for name in REFERENCE:
            expect_equal(load_count(name), 1, f"the loads of the {name} model at start-up")
        expect_json(client.post("/tickets/predict", json={"text": TICKETS[0]}))


def test_each_model_loads_once_however_many_requests(app_server):
    instances = wines()
    # A route added for this test only (coursekit/app_setups.py): how many times
    # load_model loaded each model since your app was set up, start-up included.
    with served(app_server, setup=["coursekit.app_setups:model_loads"]) as client:
        for text in TICKETS[:3]:
            expect_json(client.post("/tickets/predict", json={"text": text}))
        expect_json(client.post("/tickets/predict/batch", json={"instances": [{"text": "hi"}]}))
        for wine in instances[:3]:
            expect_json(client.post("/wine/predict", json=wine))
        expect_json(client.post("/wine/predict/batch", json={"instances": instances}))
        expect_json(client.get("/models"))
        expect_json(client.get("/models/wine"))
        loads = expect_json(client.get("/test-only/model-loads"))
    for name in REFERENCE:
        expect_equal(loads.get(name), 1, f"the loads of the {name} model after 10 requests")


def test_model_metadata_matches_the_artifact(client):
    for name, model in REFERENCE.items():
        body = expect_json(client.get(f"/models/{name}"))
        if not isinstance(body, dict):
            raise AssertionError(f"GET /models/{name}: expected a JSON object, got {shown(body)}.")
        metadata = model.metadata
        for field in ("name", "version", "task", "classes", "metrics", "library_versions"):
            expect_equal(body.get(field), metadata[field], f"GET /models/{name}: `{field}`")
        try:
            trained_at = datetime.fromisoformat(body.get("trained_at"))
        except (TypeError, ValueError):
            raise AssertionError(
                f"GET /models/{name}: `trained_at` should be an ISO 8601 date and time, "
                f"got {shown(body.get('trained_at'))}."
            ) from None
        expect_equal(
            trained_at,
            datetime.fromisoformat(metadata["trained_at"]),
            f"GET /models/{name}: `trained_at`",
        )


def test_model_metadata_has_exactly_the_documented_fields(client):
    for name in REFERENCE:
        body = expect_json(client.get(f"/models/{name}"))
        expect_exact_keys(body, METADATA_FIELDS, f"GET /models/{name}")
        expect_exact_keys(
            body["metrics"], ["accuracy", "macro_f1", "n_train", "n_test"], f"{name}'s metrics"
        )


def test_the_model_list_describes_every_model(client):
    body = expect_json(client.get("/models"))
    if not isinstance(body, list):
        raise AssertionError(f"GET /models: expected a JSON list, got {shown(body)}.")
    by_name = {item.get("name"): item for item in body if isinstance(item, dict)}
    expect_equal(sorted(by_name), sorted(REFERENCE), "the names of the models in GET /models")
    expect_equal(len(body), len(REFERENCE), "the number of entries in GET /models")
    for name in REFERENCE:
        expect_equal(
            by_name[name],
            expect_json(client.get(f"/models/{name}")),
            f"the {name} entry of GET /models compared with GET /models/{name}",
        )


def test_an_unknown_model_name_is_a_422(client):
    expect_json(client.get("/models/tickets"))
    expect_validation_error(client.get("/models/sentiment"), loc=["path", "name"])


def test_bad_requests_are_still_a_422(client):
    expect_json(client.post("/tickets/predict/batch", json={"instances": [{"text": "hi"}]}))
    expect_validation_error(
        client.post("/tickets/predict", json={"text": "   "}), loc=["body", "text"]
    )
    expect_validation_error(
        client.post("/tickets/predict/batch", json={"instances": [{"text": "hi"}, {"text": ""}]}),
        loc=["body", "instances", 1, "text"],
    )
    # A batch holds 1 to 100 instances: a full one is fine, an empty or bigger one is not.
    full = {"instances": [{"text": "hi"}] * MAX_BATCH}
    body = expect_json(client.post("/tickets/predict/batch", json=full))
    expect_equal(len(body.get("predictions", [])), MAX_BATCH, "predictions for 100 tickets")
    for path, item in (
        ("/tickets/predict/batch", {"text": "hi"}),
        ("/wine/predict/batch", wines()[0]),
    ):
        expect_validation_error(
            client.post(path, json={"instances": []}),
            loc=["body", "instances"],
            error_type="too_short",
        )
        expect_validation_error(
            client.post(path, json={"instances": [item] * (MAX_BATCH + 1)}),
            loc=["body", "instances"],
            error_type="too_long",
        )
    wine = {**wines()[0], "alcohol": 99.0}
    expect_validation_error(client.post("/wine/predict", json=wine), loc=["body", "alcohol"])


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with spaces to exactly `size` bytes: still valid JSON."""
    data = json.dumps(body).encode()
    return data + b" " * (size - len(data))


def chunked(data: bytes, chunk: int = 65_536) -> Iterator[bytes]:
    """`data` in pieces: a generator has no length, so it goes out without Content-Length."""
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def test_a_body_over_the_size_limit_is_a_413(client):
    # The largest batch of long tickets the schemas allow fits under the limit...
    longest = {"instances": [{"text": "a" * 2000}] * MAX_BATCH}
    body = expect_json(client.post("/tickets/predict/batch", json=longest))
    expect_equal(len(body.get("predictions", [])), MAX_BATCH, "predictions for 100 long tickets")
    # ...and so does any valid body of exactly MAX_BODY_SIZE bytes.
    ticket = {"text": TICKETS[0]}
    at_limit = padded(ticket, MAX_BODY_SIZE)
    body = expect_json(client.post("/tickets/predict", content=at_limit, headers=JSON_HEADERS))
    expect_equal(
        body.get("label"),
        expected_singles("tickets", [TICKETS[0]])[0][0],
        f"the label of POST /tickets/predict with a {MAX_BODY_SIZE}-byte body",
    )
    # One byte more is refused before it is parsed, declared or streamed: a 413, not a 500.
    for how, url, content in (
        ("declared", "/tickets/predict", padded(ticket, MAX_BODY_SIZE + 1)),
        (
            "streamed",
            "/wine/predict/batch",
            chunked(padded({"instances": wines()}, MAX_BODY_SIZE + 1)),
        ),
    ):
        response = client.post(url, content=content, headers=JSON_HEADERS)
        what = f"POST {url} with a {how} body of {MAX_BODY_SIZE + 1} bytes"
        expect_equal(response.status_code, 413, f"the status of {what}")
        expect_equal(
            "content too large" in response.text.lower(),
            True,
            f"does the answer to {what} say why ({response.text[:100]!r})",
        )
