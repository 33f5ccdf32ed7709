"""Graded tests for step 05. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/05_dependency_injection`. Points and hints live in
course.toml; the fixtures come from the grader: `exercise("app")` imports your app.py
afresh for each test, and with it your deps.py, routes.py and prediction_log.py;
`app_url` serves that app under a real uvicorn server. Most tests swap your
`get_settings` (deps.py) for test settings (known API keys, a database file of their
own) with `app.dependency_overrides`, exactly as the lesson does: so `get_settings` must
be the function your routes depend on. `client` talks to your app over HTTP; the tests
that reach into it (another model, a counted load) use `service` and `service_client`.

Errors come in step 04's error body, {"error": {"code": ..., "message": ..., "details": [...]}}:
its handlers are given (errors.py), so an HTTPException you raise is answered in it.
"""

import contextlib
import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from autograder.expect import describe, expect_equal, expect_json, expect_status, shown
from coursekit.app_setups import AFTER_IMPORT_ENV
from coursekit.datasets import WINE_FEATURES
from coursekit.embeddings import EMBEDDING_DIMENSION, embed
from coursekit.fake_models import ANSWERS as FAKE_ANSWERS
from coursekit.fake_models import EMBEDDED as FAKE_EMBEDDED
from coursekit.fake_models import VERSION as FAKE_VERSION
from coursekit.models import LoadedModel, load_model

# Loaded once, when this file is collected: the answers your service must give.
REFERENCE: dict[str, LoadedModel] = {name: load_model(name) for name in ("tickets", "wine")}
EMBEDDER = load_model("embedder")

KEY = "test-key-7f3a9c"
DATABASE = "predictions.sqlite3"  # in each test's own folder
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


def deps_of(app_module: ModuleType) -> ModuleType:
    """The deps.py that `app_module`, a fresh import of your app.py, uses (through routes.py)."""
    deps = sys.modules.get("deps")
    if deps is None:
        raise AssertionError(
            f"{app_module.__name__}.py was imported, but deps.py was not: keep your "
            "dependencies in deps.py, and import them from there in routes.py."
        )
    return deps


def log_rows(database: Path) -> list[dict[str, Any]]:
    """The prediction log as the database file holds it (committed rows only)."""
    if not database.exists():
        return []
    with sqlite3.connect(database) as connection:
        connection.row_factory = sqlite3.Row
        tables = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'predictions'"
        ).fetchall()
        if not tables:
            return []
        rows = connection.execute(
            "SELECT id, model, input, output, latency_ms FROM predictions ORDER BY id"
        ).fetchall()
    return [dict(row) for row in rows]


class Service:
    """Your app, freshly imported, with test settings in place of get_settings."""

    def __init__(self, module: ModuleType, database: Path, keys: list[str]) -> None:
        self.app = module.app
        self.deps = deps_of(module)
        self.database = database
        settings = self.deps.Settings(api_keys=keys, database_path=database)
        self.app.dependency_overrides[self.deps.get_settings] = lambda: settings

    def log_rows(self) -> list[dict[str, Any]]:
        return log_rows(self.database)


@pytest.fixture
def app_settings(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """The test settings the grader's `app_url` gives your app: its get_settings (deps.py)
    answers Settings(api_keys=[KEY], database_path=<this test's folder>/DATABASE)."""
    return ("deps", {"api_keys": [KEY], "database_path": str(tmp_path / DATABASE)})


@pytest.fixture
def client(app_url: str) -> Iterator[httpx2.Client]:
    """Your app, fresh, under a uvicorn server of this test's own, with `app_settings`."""
    with httpx2.Client(base_url=app_url, timeout=None) as http:
        yield http


@contextlib.contextmanager
def served(app_server: Any, env: dict[str, str], settings: Any) -> Iterator[httpx2.Client]:
    """Your app, fresh, under a uvicorn server of this test's own (the grader's
    `app_server`), started with `env` and these settings (None: your get_settings's own)."""
    with (
        app_server(env, settings=settings) as base_url,
        httpx2.Client(base_url=base_url, timeout=None) as http,
    ):
        yield http


@contextlib.contextmanager
def set_up(app_server: Any, setup: str) -> Iterator[httpx2.Client]:
    """Your app, fresh, with `app_settings`, under a uvicorn server of this test's own, set
    up by coursekit.app_setups's `setup` (a route for the test only, or fake models)."""
    with (
        app_server({}, setup=[f"coursekit.app_setups:{setup}"]) as base_url,
        httpx2.Client(base_url=base_url, timeout=None) as http,
    ):
        yield http


@pytest.fixture
def service(exercise, tmp_path: Path) -> Service:
    """For the tests that reach into your app: the same settings, in this process."""
    return Service(exercise("app"), tmp_path / DATABASE, [KEY])


@pytest.fixture
def service_client(service: Service) -> Iterator[TestClient]:
    """A TestClient on `service`'s app, inside its lifespan."""
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


def expected_wine(wine: dict[str, float]) -> tuple[str, float]:
    row = REFERENCE["wine"].pipeline.predict_proba([[wine[name] for name in WINE_FEATURES]])[0]
    return REFERENCE["wine"].classes[int(row.argmax())], float(row.max())


# --- Settings ------------------------------------------------------------------------------


def test_settings_come_from_the_environment(app_server, tmp_path):
    database = tmp_path / "from-env.sqlite3"
    env = {
        "PREDICTOR_API_KEYS": json.dumps([KEY, OTHER_KEY]),
        "PREDICTOR_DATABASE_PATH": str(database),
    }
    # settings=None: your get_settings as you wrote it, reading this environment.
    with served(app_server, env, settings=None) as client:
        for key in (KEY, OTHER_KEY):
            expect_json(client.post("/embed", json={"texts": ["hello"]}, headers=bearer(key)))
        expect_json(client.post("/tickets/predict", json={"text": TEXTS[0]}))
    expect_equal(
        len(log_rows(database)),
        1,
        "the predictions logged in the file named by PREDICTOR_DATABASE_PATH",
    )


def test_settings_are_read_when_first_needed_not_at_import(app_server, tmp_path):
    env = {
        "PREDICTOR_DATABASE_PATH": str(tmp_path / "late.sqlite3"),
        # Set after the import, before the start (coursekit/app_setups.py): only settings
        # read late see it.
        AFTER_IMPORT_ENV: json.dumps({"PREDICTOR_API_KEYS": json.dumps([KEY])}),
    }
    setup = [
        "coursekit.app_setups:environment_after_import",
        "coursekit.app_setups:settings_cache_probe",
    ]
    # settings=None: your get_settings as you wrote it, reading this environment.
    with (
        app_server(env, settings=None, setup=setup) as base_url,
        httpx2.Client(base_url=base_url, timeout=None) as client,
    ):
        response = client.post("/embed", json={"texts": ["hello"]}, headers=bearer(KEY))
        if response.status_code == 401:
            raise AssertionError(
                "PREDICTOR_API_KEYS was set after app.py was imported and before the first "
                f"request, yet {describe(response)} answered 401: the settings were read at "
                "import. Build Settings() inside get_settings, never at the top of app.py."
            )
        expect_json(response)
        # get_settings() called twice, PREDICTOR_API_KEYS changed in between.
        changed = {"name": "PREDICTOR_API_KEYS", "value": json.dumps([OTHER_KEY])}
        cached = expect_json(client.get("/test-only/settings-cached", params=changed))
    if cached.get("same") is not True:
        raise AssertionError(
            "Two calls of get_settings() returned two different Settings: it must build "
            "them on its first call and return that same object afterwards (@lru_cache)."
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


def test_the_registry_loads_each_model_once(app_server):
    # A set-up for this test only (coursekit/app_setups.py): how many times load_model
    # loaded each model since your app was set up, its start-up included.
    with set_up(app_server, "model_loads") as client:
        for text in TEXTS:
            expect_json(client.post("/tickets/predict", json={"text": text}))
        expect_json(client.post("/wine/predict", json=WINE))
        expect_json(client.get("/models/tickets"))
        expect_json(client.get("/models"))
        expect_json(client.post("/embed", json={"texts": TEXTS}, headers=bearer(KEY)))
        expect_json(client.post("/embed", json={"texts": TEXTS}, headers=bearer(KEY)))
        loads = expect_json(client.get("/test-only/model-loads"))
    for name in ("tickets", "wine"):
        expect_equal(loads.get(name), 1, f"the loads of the {name} model after 9 requests")
    # At most once: coursekit.embeddings.embed(texts) alone shares one embedder per process.
    if loads.get("embedder", 0) > 1:
        raise AssertionError(
            f"the embedder was loaded {loads['embedder']} times for 9 requests: load "
            "it once, in the lifespan, and hand it to the route with get_embedder."
        )


def test_an_overridden_model_is_the_one_used(app_server):
    # get_registry gives fake models (coursekit/fake_models.py): no real model answers this.
    with set_up(app_server, "fake_registry") as client:
        body = expect_json(client.post("/tickets/predict", json={"text": "I was charged twice"}))
        expect_fields_of(body, "tickets")
        expect_fields_of(expect_json(client.post("/wine/predict", json=WINE)), "wine")
        for name in ("tickets", "wine"):
            body = expect_json(client.get(f"/models/{name}"))
            expect_equal(
                body.get("version"), FAKE_VERSION, f"GET /models/{name}: the version of the fake"
            )


def expect_fields_of(body: Any, name: str) -> None:
    """The label and confidence of an answer are those of the fake `name` model (exactly)."""
    label, confidence = FAKE_ANSWERS[name]
    expected = {"label": label, "confidence": confidence}
    got = {field: body.get(field) for field in expected} if isinstance(body, dict) else body
    expect_equal(got, expected, f"the answer when the registry holds a fake {name} model")


def test_a_model_the_registry_lacks_is_a_503(app_server):
    requests = {
        "tickets": ("/tickets/predict", {"text": TEXTS[0]}),
        "wine": ("/wine/predict", WINE),
    }
    for missing, kept in (("tickets", "wine"), ("wine", "tickets")):
        # get_registry gives only the model `kept` (coursekit/app_setups.py).
        with set_up(app_server, f"registry_without_{missing}") as client:
            path, body = requests[missing]
            expect_error(client.post(path, json=body), 503, "model_not_loaded")
            path, body = requests[kept]
            expect_json(client.post(path, json=body))


def test_the_models_run_off_the_event_loop(app_server):
    # The fake models note, for each call, whether it ran on the event loop's thread.
    with set_up(app_server, "fake_registry") as client:
        expect_json(client.post("/tickets/predict", json={"text": TEXTS[0]}))
        expect_json(client.post("/wine/predict", json=WINE))
        on_the_loop = expect_json(client.get("/test-only/fake-model-calls"))
    for path, name in (("/tickets/predict", "tickets"), ("/wine/predict", "wine")):
        calls = on_the_loop.get(name)
        if not calls:
            raise AssertionError(f"POST {path} never called the model that get_registry gave it.")
        if any(calls):
            raise AssertionError(
                f"POST {path} ran the model on the event loop (in an `async def` route): no "
                "other request is answered while it computes. Keep the route a plain `def`: "
                "FastAPI runs it in its threadpool."
            )


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
    for texts in ([], [f"text {n}" for n in range(65)]):
        response = client.post("/embed", json={"texts": texts}, headers=bearer(KEY))
        expect_invalid(response, ["body", "texts"])
    response = client.post("/embed", json={"texts": ["ok", "x" * 2001]}, headers=bearer(KEY))
    expect_invalid(response, ["body", "texts", 1])
    # Step 04's body limit, 1 MiB, still holds: Starlette answers 413 (in plain text).
    oversized = json.dumps({"texts": ["hello"]}).encode() + b" " * 1_048_576
    headers = {**bearer(KEY), "content-type": "application/json"}
    expect_status(client.post("/embed", content=oversized, headers=headers), 413)
    response = client.post("/embed", json={"texts": TEXTS}, headers=bearer(KEY))
    body = expect_json(response)
    expect_equal(body.get("dimension"), EMBEDDING_DIMENSION, "the `dimension` of POST /embed")
    vectors = body.get("embeddings")
    expect_equal(isinstance(vectors, list) and len(vectors), len(TEXTS), "the number of embeddings")
    for text, vector, expected in zip(TEXTS, vectors, embed(TEXTS, model=EMBEDDER), strict=True):
        expect_equal(len(vector), EMBEDDING_DIMENSION, f'the length of the vector of "{text}"')
        # Same model, same floats: equal exactly (JSON keeps every digit of a float).
        if vector != expected:
            raise AssertionError(
                f'the embedding of "{text}" differs from coursekit.embeddings.embed: '
                f"expected {expected[:3]}..., got {vector[:3]}... (do not round them)"
            )


def test_embed_uses_the_embedder_it_is_given(app_server):
    # get_embedder gives a fake whose every vector is 0.25 in each dimension.
    with set_up(app_server, "fake_embedder") as client:
        body = expect_json(client.post("/embed", json={"texts": TEXTS}, headers=bearer(KEY)))
    expect_equal(
        body.get("embeddings"),
        [[FAKE_EMBEDDED] * EMBEDDING_DIMENSION] * len(TEXTS),
        "the embeddings when get_embedder gives a fake embedder (use embed(texts, "
        "model=embedder) with the embedder of EmbedderDep, not the shared default)",
    )


def test_every_configured_key_is_accepted(app_server, tmp_path):
    settings = {"api_keys": [KEY, OTHER_KEY], "database_path": str(tmp_path / "log.sqlite3")}
    with served(app_server, {}, settings) as client:
        for key in (KEY, OTHER_KEY):
            expect_json(client.post("/embed", json={"texts": ["hello"]}, headers=bearer(key)))
        response = client.post("/embed", json={"texts": ["hello"]}, headers=bearer("neither"))
        expect_unauthorized(response, "POST /embed with a key that is not configured")


def test_with_no_key_configured_every_request_is_refused(app_server, tmp_path):
    settings = {"api_keys": [], "database_path": str(tmp_path / "log.sqlite3")}
    with served(app_server, {}, settings) as client:
        for what, headers in {"no key": {}, "a key": bearer(KEY)}.items():
            response = client.post("/embed", json={"texts": ["hello"]}, headers=headers)
            expect_unauthorized(response, f"POST /embed with {what}, while no key is configured")
        response = client.get("/predictions", headers=bearer(KEY))
        expect_unauthorized(response, "GET /predictions with a key, while no key is configured")


# --- The prediction log -----------------------------------------------------------------


def test_each_prediction_is_logged_in_the_database(client, tmp_path):
    answers = [expect_json(client.post("/tickets/predict", json={"text": t})) for t in TEXTS]
    wine_answer = expect_json(client.post("/wine/predict", json=WINE))
    rows = log_rows(tmp_path / DATABASE)
    expect_equal(len(rows), len(TEXTS) + 1, "the rows in the predictions table after 4 predictions")
    for text, answer, row in zip(TEXTS, answers, rows, strict=False):
        label, confidence = expected_ticket(text)
        expected = {"label": label, "confidence": confidence}
        expect_equal(answer, expected, f'the answer of POST /tickets/predict for "{text}"')
        expect_equal(row["model"], "tickets", f'the `model` logged for "{text}"')
        expect_equal(json.loads(row["input"]).get("text"), text, f'the `input` logged for "{text}"')
        expect_equal(json.loads(row["output"]), answer, f'the `output` logged for "{text}"')
    label, confidence = expected_wine(WINE)
    expected = {"label": label, "confidence": confidence}
    expect_equal(wine_answer, expected, "the answer of POST /wine/predict")
    wine_row = rows[-1]
    expect_equal(wine_row["model"], "wine", "the `model` logged for the wine")
    logged_wine = json.loads(wine_row["input"])
    expect_equal({k: logged_wine.get(k) for k in WINE}, WINE, "the `input` logged for the wine")
    expect_equal(json.loads(wine_row["output"]), wine_answer, "the `output` logged for the wine")
    for row in rows:
        latency = row["latency_ms"]
        if not isinstance(latency, int | float) or latency < 0:
            raise AssertionError(f"latency_ms must be a number of milliseconds, got {latency!r}.")


def logged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the log as GET /predictions shows them: input and output decoded."""
    return [
        {**row, "input": json.loads(row["input"]), "output": json.loads(row["output"])}
        for row in rows
    ]


def test_the_log_endpoint_returns_the_latest_predictions(client, tmp_path):
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
    fields = ("id", "model", "input", "output", "latency_ms")
    expect_equal(
        [{field: entry.get(field) for field in fields} for entry in body],
        logged(log_rows(tmp_path / DATABASE))[::-1][:2],
        "the entries of GET /predictions?limit=2 (the 2 latest rows of the log, newest first)",
    )
    everything = expect_json(client.get("/predictions", headers=bearer(KEY)))
    expect_equal(len(everything), 3, "the entries of GET /predictions (default limit 20)")
    # 22 more rows at once: the batch route logs one row per instance.
    batch = {"instances": [{"text": f"Ticket number {n}"} for n in range(22)]}
    expect_json(client.post("/tickets/predict/batch", json=batch))
    newest = [row["id"] for row in log_rows(tmp_path / DATABASE)][::-1]
    default = expect_json(client.get("/predictions", headers=bearer(KEY)))
    expect_equal(
        [entry.get("id") for entry in default],
        newest[:20],
        "the ids of GET /predictions without a limit, with 25 rows in the log (the 20 latest)",
    )
    expect_unauthorized(client.get("/predictions"), "GET /predictions without a key")
    expect_unauthorized(
        client.get("/predictions", headers=bearer("not-the-key")), "GET /predictions, wrong key"
    )


def test_the_log_limit_is_validated(client):
    for limit in (1, 100):
        expect_json(client.get(f"/predictions?limit={limit}", headers=bearer(KEY)))
    for limit in (0, 101, -1, "ten"):
        expect_invalid(
            client.get(f"/predictions?limit={limit}", headers=bearer(KEY)), ["query", "limit"]
        )


def test_the_connection_is_closed_after_each_request(app_server, tmp_path):
    # Routes added for this test only (coursekit/app_setups.py): two receive your
    # get_connection's connection and write a row of the log with it, the second then
    # raises a 409; a third tells what became of the connections they received.
    with set_up(app_server, "connection_probe") as client:
        expect_json(client.get("/test-only/connection"))
        expect_json(client.get("/test-only/connection"))
        expect_status(client.get("/test-only/failure"), 409)
        seen = expect_json(client.get("/test-only/connections"))
    expect_equal(seen.get("received"), 3, "the connections received by 3 requests")
    expect_equal(seen.get("distinct"), 3, "the different connections 3 requests received")
    for what, still_open in zip(["first", "second", "failed"], seen.get("open", []), strict=False):
        if still_open:
            raise AssertionError(
                f"the connection of the {what} request is still open after its response: "
                "close it after the `yield`, in a `finally` so that a failing route closes it too."
            )
    rows = log_rows(tmp_path / DATABASE)
    models = [row["model"] for row in rows]
    if "test-failed" in models:
        raise AssertionError(
            "a route that wrote to the log and then raised had its row committed: commit "
            "after the `yield` only when the route returned (inside the `try`, not in the "
            "`finally`), so a failed request logs nothing."
        )
    expect_equal(models, ["test-succeeded"] * 2, "the rows written by the 2 routes that returned")
