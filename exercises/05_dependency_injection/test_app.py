"""Graded tests for step 05. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/05_dependency_injection`. Points and hints live in
course.toml; the fixtures come from the grader: `exercise("app")` imports your app.py
afresh for each test. Most tests swap your `get_settings` for test settings (known API
keys, a database file of their own) with `app.dependency_overrides`, exactly as the
lesson does: so `get_settings` must be the function your routes depend on.

Errors come in step 04's error body, {"error": {"code": ..., "message": ..., "details": [...]}}:
its handlers are given in app.py, so an HTTPException you raise is answered in it.
"""

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import numpy as np
import pytest
from fastapi import Depends, HTTPException
from fastapi.testclient import TestClient

from autograder.expect import describe, expect_equal, expect_json, expect_status, shown
from coursekit.embeddings import EMBEDDING_DIMENSION, embed
from coursekit.models import LoadedModel, load_count, load_model, reset_load_counts

# Loaded once, when this file is collected: the answers your service must give.
REFERENCE: dict[str, LoadedModel] = {name: load_model(name) for name in ("tickets", "wine")}
EMBEDDER = load_model("embedder")

KEY = "test-key-7f3a9c"
OTHER_KEY = "rotated-key-b21e04"
TEXTS = ["My parcel never arrived", "I was charged twice this month", "The app crashes"]
WINE = {
    "alcohol": 13.2,
    "malic_acid": 1.78,
    "ash": 2.14,
    "alcalinity_of_ash": 11.2,
    "magnesium": 100.0,
    "total_phenols": 2.65,
    "flavanoids": 2.76,
    "nonflavanoid_phenols": 0.26,
    "proanthocyanins": 1.28,
    "color_intensity": 4.38,
    "hue": 1.05,
    "od280_od315_of_diluted_wines": 3.4,
    "proline": 1050.0,
}
TOLERANCE = 1e-6


class Service:
    """Your app, freshly imported, with test settings in place of get_settings."""

    def __init__(self, module: ModuleType, database: Path, keys: list[str]) -> None:
        self.module = module
        self.app = module.app
        self.database = database
        settings = module.Settings(api_keys=keys, database_path=database)
        self.app.dependency_overrides[module.get_settings] = lambda: settings

    def log_rows(self) -> list[dict[str, Any]]:
        """The prediction log as the database file holds it (committed rows only)."""
        if not self.database.exists():
            return []
        with sqlite3.connect(self.database) as connection:
            connection.row_factory = sqlite3.Row
            tables = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'predictions'"
            ).fetchall()
            if not tables:
                return []
            rows = connection.execute(
                "SELECT model, input, output, latency_ms FROM predictions ORDER BY id"
            ).fetchall()
        return [dict(row) for row in rows]


@pytest.fixture
def service(exercise, tmp_path: Path) -> Service:
    return Service(exercise("app"), tmp_path / "predictions.sqlite3", [KEY])


@pytest.fixture
def client(service: Service) -> Iterator[TestClient]:
    with TestClient(service.app) as test_client:
        yield test_client


def bearer(key: str | bytes) -> dict[str, Any]:
    prefix = b"Bearer " if isinstance(key, bytes) else "Bearer "
    return {"Authorization": prefix + key}


def expect_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """`status`, with step 04's error body and this `code`; return the body's "error"."""
    body = expect_json(response, status)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise AssertionError(
            f"{describe(response)} answered {status}, but not in step 04's error body "
            f'{{"error": {{"code": ..., "message": ..., "details": [...]}}}}. Got {shown(body)}.'
        )
    expect_equal(error.get("code"), code, f"the error code of {describe(response)}")
    message = error.get("message")
    if not isinstance(message, str) or not message.strip():
        raise AssertionError(
            f"{describe(response)}: error.message must be a sentence; got {shown(message)}."
        )
    return error


def expect_invalid(response: Any, loc: list[str | int]) -> None:
    """A 422 in step 04's error body, with a detail at `loc`."""
    error = expect_error(response, 422, "validation_error")
    details = error.get("details")
    details = details if isinstance(details, list) else []
    locations = [detail.get("loc") for detail in details if isinstance(detail, dict)]
    if loc not in locations:
        raise AssertionError(
            f"{describe(response)}: expected a detail at {loc}, but the details are at "
            f"{shown(locations)}."
        )


def expect_unauthorized(response: Any, what: str) -> None:
    """A 401 in the error body that tells the client to send a bearer token."""
    expect_status(response, 401)
    challenge = response.headers.get("www-authenticate", "")
    if not challenge.lower().startswith("bearer"):
        raise AssertionError(
            f"{what}: a 401 must carry the header `WWW-Authenticate: Bearer` (it tells the "
            f"client how to authenticate); got {challenge or 'no such header'!r}."
        )
    expect_error(response, 401, "unauthorized")


def expected_ticket(text: str) -> tuple[str, float]:
    row = REFERENCE["tickets"].pipeline.predict_proba([text])[0]
    return REFERENCE["tickets"].classes[int(row.argmax())], float(row.max())


def expect_close(actual: Any, expected: float, what: str) -> None:
    if not isinstance(actual, int | float) or abs(actual - expected) > TOLERANCE:
        raise AssertionError(f"{what}: expected {expected}, got {actual!r}.")


# --- Settings ------------------------------------------------------------------------------


def test_settings_come_from_the_environment(exercise, monkeypatch, tmp_path):
    database = tmp_path / "from-env.sqlite3"
    monkeypatch.setenv("PREDICTOR_API_KEYS", json.dumps([KEY]))
    monkeypatch.setenv("PREDICTOR_DATABASE_PATH", str(database))
    module = exercise("app")
    with TestClient(module.app) as client:
        expect_json(client.post("/embed", json={"texts": ["hello"]}, headers=bearer(KEY)))
        expect_json(client.post("/tickets/predict", json={"text": TEXTS[0]}))
    service = Service(module, database, [])
    expect_equal(
        len(service.log_rows()),
        1,
        "the predictions logged in the file named by PREDICTOR_DATABASE_PATH",
    )


# --- The model registry --------------------------------------------------------------------


def test_the_registry_serves_each_model_by_name(client):
    for name, model in REFERENCE.items():
        body = expect_json(client.get(f"/models/{name}"))
        for field in ("name", "version", "classes"):
            expect_equal(body.get(field), model.metadata[field], f"GET /models/{name}: `{field}`")
    listed = expect_json(client.get("/models"))
    expect_equal(
        sorted(item.get("name") for item in listed), sorted(REFERENCE), "the names in GET /models"
    )


def test_an_unknown_model_name_is_a_404(client):
    expect_json(client.get("/models/wine"))
    expect_error(client.get("/models/sentiment"), 404, "not_found")


def test_the_registry_loads_each_model_once(service):
    reset_load_counts()
    with TestClient(service.app) as client:
        for text in TEXTS:
            expect_json(client.post("/tickets/predict", json={"text": text}))
        expect_json(client.post("/wine/predict", json=WINE))
        expect_json(client.get("/models/tickets"))
        expect_json(client.get("/models"))
        expect_json(client.post("/embed", json={"texts": TEXTS}, headers=bearer(KEY)))
        expect_json(client.post("/embed", json={"texts": TEXTS}, headers=bearer(KEY)))
        for name in ("tickets", "wine"):
            expect_equal(load_count(name), 1, f"the loads of the {name} model after 9 requests")
        # At most once: coursekit.embeddings.embed(texts) alone shares one embedder per process.
        if load_count("embedder") > 1:
            raise AssertionError(
                f"the embedder was loaded {load_count('embedder')} times for 9 requests: load "
                "it once, in the lifespan, and hand it to the route with get_embedder."
            )


def test_an_overridden_model_is_the_one_used(service, client):
    class FakePipeline:
        """Says `account` with 0.55 for every text: no real model answers that."""

        def predict_proba(self, inputs: list[Any]) -> np.ndarray:
            row = [0.55 if label == "account" else 0.15 for label in REFERENCE["tickets"].classes]
            return np.array([row] * len(inputs))

        def predict(self, inputs: list[Any]) -> np.ndarray:
            return np.array(["account"] * len(inputs))

    fake = LoadedModel(
        name="tickets",
        pipeline=FakePipeline(),
        metadata=REFERENCE["tickets"].metadata,
        path=Path("fake"),
    )
    registry = {"tickets": fake, "wine": REFERENCE["wine"]}
    service.app.dependency_overrides[service.module.get_registry] = lambda: registry
    body = expect_json(client.post("/tickets/predict", json={"text": "I was charged twice"}))
    expect_equal(body.get("label"), "account", "the label from the fake model put in the registry")
    expect_close(body.get("confidence"), 0.55, "the confidence from the fake model")


# --- API keys ------------------------------------------------------------------------------


def test_embed_without_a_key_is_a_401(client):
    expect_json(client.post("/embed", json={"texts": ["hello"]}, headers=bearer(KEY)))
    response = client.post("/embed", json={"texts": ["hello"]})
    expect_unauthorized(response, "POST /embed without an Authorization header")


def test_embed_with_a_wrong_key_is_a_401(client):
    expect_json(client.post("/embed", json={"texts": ["hello"]}, headers=bearer(KEY)))
    wrong = {
        "a wrong key": bearer("not-the-key"),
        "the key with a character missing": bearer(KEY[:-1]),
        "the key with a character too many": bearer(KEY + "x"),
        "the key in another scheme (Basic)": {"Authorization": f"Basic {KEY}"},
        "a key with a non-ASCII character": bearer(b"cl\xe9"),
    }
    for what, headers in wrong.items():
        response = client.post("/embed", json={"texts": ["hello"]}, headers=headers)
        expect_unauthorized(response, f"POST /embed with {what}")


def test_embed_with_the_right_key_returns_the_embeddings(client):
    response = client.post("/embed", json={"texts": TEXTS}, headers=bearer(KEY))
    body = expect_json(response)
    expect_equal(body.get("dimension"), EMBEDDING_DIMENSION, "the `dimension` of POST /embed")
    vectors = body.get("embeddings")
    expect_equal(isinstance(vectors, list) and len(vectors), len(TEXTS), "the number of embeddings")
    for text, vector, expected in zip(TEXTS, vectors, embed(TEXTS, model=EMBEDDER), strict=True):
        expect_equal(len(vector), EMBEDDING_DIMENSION, f'the length of the vector of "{text}"')
        if max(abs(a - b) for a, b in zip(vector, expected, strict=True)) > TOLERANCE:
            raise AssertionError(
                f'the embedding of "{text}" differs from coursekit.embeddings.embed: '
                f"expected {expected[:3]}..., got {vector[:3]}..."
            )


def test_every_configured_key_is_accepted(exercise, tmp_path):
    service = Service(exercise("app"), tmp_path / "log.sqlite3", [KEY, OTHER_KEY])
    with TestClient(service.app) as client:
        for key in (KEY, OTHER_KEY):
            expect_json(client.post("/embed", json={"texts": ["hello"]}, headers=bearer(key)))
        response = client.post("/embed", json={"texts": ["hello"]}, headers=bearer("neither"))
        expect_unauthorized(response, "POST /embed with a key that is not configured")


# --- The prediction log -----------------------------------------------------------------


def test_each_prediction_is_logged_in_the_database(service, client):
    answers = [expect_json(client.post("/tickets/predict", json={"text": t})) for t in TEXTS]
    wine_answer = expect_json(client.post("/wine/predict", json=WINE))
    rows = service.log_rows()
    expect_equal(len(rows), len(TEXTS) + 1, "the rows in the predictions table after 4 predictions")
    for text, answer, row in zip(TEXTS, answers, rows, strict=False):
        expect_equal(row["model"], "tickets", f'the `model` logged for "{text}"')
        expect_equal(json.loads(row["input"]).get("text"), text, f'the `input` logged for "{text}"')
        output = json.loads(row["output"])
        expect_equal(output.get("label"), answer["label"], f'the label logged for "{text}"')
        expect_close(output.get("confidence"), answer["confidence"], f'the confidence of "{text}"')
        expect_equal(expected_ticket(text)[0], answer["label"], f'the label for "{text}"')
    wine_row = rows[-1]
    expect_equal(wine_row["model"], "wine", "the `model` logged for the wine")
    logged_wine = json.loads(wine_row["input"])
    expect_equal({k: logged_wine.get(k) for k in WINE}, WINE, "the `input` logged for the wine")
    expect_equal(json.loads(wine_row["output"]), wine_answer, "the `output` logged for the wine")
    for row in rows:
        latency = row["latency_ms"]
        if not isinstance(latency, int | float) or latency < 0:
            raise AssertionError(f"latency_ms must be a number of milliseconds, got {latency!r}.")


def test_the_log_endpoint_returns_the_latest_predictions(client):
    for text in TEXTS:
        expect_json(client.post("/tickets/predict", json={"text": text}))
    body = expect_json(client.get("/predictions?limit=2", headers=bearer(KEY)))
    expect_equal(isinstance(body, list) and len(body), 2, "the entries of GET /predictions?limit=2")
    expect_equal(
        [entry.get("input", {}).get("text") for entry in body],
        [TEXTS[2], TEXTS[1]],
        "the texts of GET /predictions?limit=2 (newest first)",
    )
    for entry in body:
        expect_equal(entry.get("model"), "tickets", "the `model` of an entry")
        expect_equal(
            entry.get("output", {}).get("label"),
            expected_ticket(entry["input"]["text"])[0],
            "the `output` label of an entry",
        )
    everything = expect_json(client.get("/predictions", headers=bearer(KEY)))
    expect_equal(len(everything), 3, "the entries of GET /predictions (default limit 20)")
    expect_unauthorized(client.get("/predictions"), "GET /predictions without a key")


def test_the_log_limit_is_validated(client):
    expect_json(client.get("/predictions?limit=100", headers=bearer(KEY)))
    for limit in (0, 101):
        expect_invalid(
            client.get(f"/predictions?limit={limit}", headers=bearer(KEY)), ["query", "limit"]
        )


def test_the_connection_is_closed_after_each_request(service, client):
    received: list[sqlite3.Connection] = []
    ConnectionParam = Annotated[sqlite3.Connection, Depends(service.module.get_connection)]

    # Two routes added for this test only: they receive your get_connection's connection.
    @service.app.get("/test-only/connection")
    def use_connection(connection: ConnectionParam) -> dict[str, int]:
        received.append(connection)
        return {"one": connection.execute("SELECT 1").fetchone()[0]}

    @service.app.get("/test-only/failure")
    def fail_after_using_it(connection: ConnectionParam) -> None:
        received.append(connection)
        connection.execute("SELECT 1")
        raise HTTPException(status_code=409, detail="the route failed on purpose")

    expect_json(client.get("/test-only/connection"))
    expect_json(client.get("/test-only/connection"))
    expect_status(client.get("/test-only/failure"), 409)
    expect_equal(len(received), 3, "the connections received by 3 requests")
    expect_equal(received[0] is received[1], False, "two requests share one connection")
    for what, connection in zip(["first", "second", "failed"], received, strict=True):
        try:
            connection.execute("SELECT 1")
        except sqlite3.ProgrammingError:
            continue  # closed, as it should be
        raise AssertionError(
            f"the connection of the {what} request is still open after its response: close "
            "it after the `yield`, in a `finally` so that a failing route closes it too."
        )
