"""Graded tests for step 13. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/13_production`. Points and hints live in course.toml.

Every test sets the SERVICE_* variables, imports your `app.py` afresh and builds the app
with your `create_app()`. The model your lifespan loads (`load_model("tickets")`) is the
real ticket model behind gates the test holds: loading can be held (start-up is not
over until the test says so), and each prediction can be held (requests stay in flight
until the test lets them go). The chat stream's model is a `GatedLM`: its first token
comes at once, the rest when the test allows them. So what is in flight is decided by
the test's gates, never by a stopwatch. Start-up, overload and shutdown run under a real
uvicorn server; the rest under `TestClient`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

import coursekit.models
from autograder.expect import OutOfTime, expect_equal, expect_json, expect_status
from autograder.sse import parse_sse
from coursekit.llm import GatedLM
from coursekit.models import LoadedModel
from coursekit.server import ThreadedServer

GATE_TIMEOUT = 10.0  # seconds a held call waits for the test before it goes on anyway
READ_TIMEOUT = 10.0  # seconds the test waits for an answer (a correct one takes far less)
PROBE_TIMEOUT = 5.0  # seconds the test waits for something it expects right away

TICKET = {"text": "I was charged twice for my subscription this month."}
ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"
LOG_KEYS = ("method", "path", "status", "duration_ms", "request_id")

# Parsed once; each test gets a shallow copy of its pipeline to instrument (the fitted
# steps are only read, so sharing them is safe, and a deep copy per test costs time).
_TICKETS = coursekit.models.load_model("tickets")


class GatedModel:
    """The real ticket model; loading it and each prediction can be held at a gate."""

    def __init__(self, *, hold_loading: bool = False, hold_predictions: bool = False) -> None:
        pipeline = copy.copy(_TICKETS.pipeline)
        self.loaded: LoadedModel = dataclasses.replace(_TICKETS, pipeline=pipeline)
        self.loading_gate = threading.Event()
        self.prediction_gate = threading.Event()
        if not hold_loading:
            self.loading_gate.set()
        if not hold_predictions:
            self.prediction_gate.set()
        self.calls = 0
        self._called = threading.Condition()
        original = self.loaded.pipeline.predict_proba

        def predict_proba(inputs: Any, *args: Any, **kwargs: Any) -> Any:
            with self._called:
                self.calls += 1
                self._called.notify_all()
            self.prediction_gate.wait(GATE_TIMEOUT)
            return original(inputs, *args, **kwargs)

        self.loaded.pipeline.predict_proba = predict_proba  # type: ignore[method-assign]

    def load_model(self, name: str, directory: Any = None) -> LoadedModel:
        if name != "tickets":
            raise ValueError(f"this service serves the tickets model, not {name!r}")
        self.loading_gate.wait(GATE_TIMEOUT)
        return self.loaded

    def wait_for_calls(self, count: int) -> bool:
        with self._called:
            return self._called.wait_for(lambda: self.calls >= count, PROBE_TIMEOUT)

    def open(self) -> None:
        self.loading_gate.set()
        self.prediction_gate.set()


@dataclass
class Running:
    """Your app, built by create_app() with a gated model, and the means to talk to it."""

    module: Any
    app: Any
    model: GatedModel
    http: Any  # an httpx2.Client on the live server, or a TestClient
    pool: ThreadPoolExecutor
    database: Path
    server: ThreadedServer | None = None
    chat: GatedLM = field(default_factory=lambda: GatedLM(timeout=GATE_TIMEOUT))

    def predict(self, headers: dict[str, str] | None = None) -> httpx.Response:
        try:
            return self.http.post("/tickets/predict", json=TICKET, headers=headers or {})
        except httpx.TimeoutException:
            raise AssertionError(
                f"POST /tickets/predict got no answer within {READ_TIMEOUT:g} s."
            ) from None

    def send(self, headers: dict[str, str] | None = None) -> Future[httpx.Response]:
        """POST in the background: the test goes on while the request is in flight."""
        return self.pool.submit(self.predict, headers)

    def wait_ready(self) -> None:
        """Wait until /health/ready says 200 (the model's gates are open)."""
        deadline = time.monotonic() + READ_TIMEOUT
        while True:
            response = self.http.get("/health/ready")
            if response.status_code == 200:
                return
            if time.monotonic() > deadline:
                raise OutOfTime(
                    f"The model loaded and the database exists, but GET /health/ready still "
                    f"answers {response.status_code} {response.text!r} after "
                    f"{READ_TIMEOUT:g} s. Once both are there it must answer 200."
                )
            time.sleep(0.005)


Start = Callable[..., Running]


@pytest.fixture
def start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, exercise: Callable[[str], Any]
) -> Iterator[Start]:
    """Set SERVICE_*, import app.py afresh with a gated model, build the app, start it."""
    stack = ExitStack()

    def starting(
        *,
        live: bool = False,
        hold_loading: bool = False,
        hold_predictions: bool = False,
        max_in_flight: int = 4,
        rate_limit: str = "1000/minute",
        providers: dict[str, Any] | None = None,
        ready: bool = True,
        observe: Callable[[Any], None] | None = None,
    ) -> Running:
        database = tmp_path / "service.db"
        sqlite3.connect(database).close()
        monkeypatch.setenv("SERVICE_CORS_ORIGINS", json.dumps([ALLOWED]))
        monkeypatch.setenv("SERVICE_RATE_LIMIT", rate_limit)
        monkeypatch.setenv("SERVICE_MAX_IN_FLIGHT", str(max_in_flight))
        monkeypatch.setenv("SERVICE_DATABASE_PATH", str(database))
        module = exercise("app")
        model = GatedModel(hold_loading=hold_loading, hold_predictions=hold_predictions)
        monkeypatch.setattr(module, "load_model", model.load_model)
        monkeypatch.setattr(coursekit.models, "load_model", model.load_model)
        app = module.create_app(**(providers or {}))
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=8))
        running = Running(module, app, model, None, pool, database)
        service = __import__("service")
        app.dependency_overrides[service.get_chat_model] = lambda: running.chat
        if observe is not None:
            observe(app)
        # Runs last at the end, first of all: a held call must not keep anything from stopping.
        if live:
            server = ThreadedServer(app, timeout_graceful_shutdown=5)
            running.server = server
            stack.callback(server.stop, wait=False)
            stack.callback(model.open)
            stack.callback(running.chat.release)
            try:
                base_url = server.start(timeout=PROBE_TIMEOUT)
            except TimeoutError:
                raise AssertionError(
                    f"While the model was still loading, uvicorn did not start serving within "
                    f"{PROBE_TIMEOUT:g} s: your lifespan waits for the model before it "
                    "yields. Load it in a task the lifespan starts, so the server serves (and "
                    "/health/live answers) at once."
                ) from None
            except RuntimeError:
                with TestClient(app):
                    pass
                raise AssertionError(
                    "Your app did not start under uvicorn; check lifespan()."
                ) from None
            running.http = stack.enter_context(
                httpx.Client(base_url=base_url, timeout=READ_TIMEOUT)
            )
        else:
            stack.callback(model.open)
            stack.callback(running.chat.release)
            running.http = stack.enter_context(TestClient(app))
            stack.callback(model.open)
        if ready and not hold_loading:
            running.wait_ready()
        return running

    with stack:
        yield starting


@pytest.fixture
def access_lines() -> Iterator[list[logging.LogRecord]]:
    """The records written to the `production.access` logger during the test."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("production.access")
    handler, level = Keep(level=logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def expect_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The service's one error body, with `code`, and `status`."""
    body = expect_json(response, status)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise AssertionError(
            f'The {status} answer must have the error body {{"error": {{"code": ...}}}}. '
            f"Got {body}."
        )
    expect_equal(error.get("code"), code, f"the error code of the {status} answer")
    return error


def expect_retry_after(response: httpx.Response, most: int, what: str) -> int:
    value = response.headers.get("retry-after", "")
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise AssertionError(
            f"{what} must say when to retry: a Retry-After header of whole seconds, 1 to "
            f"{most}. Got {value or '(none)'}."
        )
    return int(value)


def request_id_of(response: httpx.Response, what: str) -> str:
    value = response.headers.get("x-request-id")
    if not value:
        raise AssertionError(f"{what}: the answer has no X-Request-ID header.")
    return value


def is_plain_id(value: str) -> bool:
    return 1 <= len(value) <= 64 and all(c.isascii() and (c.isalnum() or c in "._-") for c in value)


# --- Request ids and logs -----------------------------------------------------------------


def test_a_valid_request_id_is_echoed(start: Start) -> None:
    running = start()
    for sent in ("abc-123", "Req_42.retry-1", "x" * 64):
        response = running.predict({"X-Request-ID": sent})
        expect_status(response, 200)
        expect_equal(
            request_id_of(response, f"POST /tickets/predict with X-Request-ID {sent!r}"),
            sent,
            f"the X-Request-ID of the answer to a request that sent X-Request-ID {sent!r}",
        )
    missing = running.http.get("/nowhere", headers={"X-Request-ID": "lost-1"})
    expect_equal(
        request_id_of(missing, "GET /nowhere"), "lost-1", "the X-Request-ID of a 404 answer"
    )


def test_a_missing_or_invalid_request_id_is_replaced(start: Start) -> None:
    running = start()
    seen: list[str] = []
    for sent in (None, None, "has spaces in it", "x" * 65, "semi;colon", ""):
        headers = {} if sent is None else {"X-Request-ID": sent}
        response = running.predict(headers)
        expect_status(response, 200)
        shown = "no X-Request-ID" if sent is None else f"X-Request-ID {sent!r}"
        what = f"POST /tickets/predict with {shown}"
        value = request_id_of(response, what)
        if value == sent or not is_plain_id(value):
            raise AssertionError(
                f"{what}: the answer's X-Request-ID is {value!r}. An id that is missing or not "
                "1 to 64 of A-Z a-z 0-9 . _ - must be replaced by a new one that is."
            )
        seen.append(value)
    if len(set(seen)) != len(seen):
        raise AssertionError(f"Each new request id must be new; the answers got {seen}.")


def test_each_request_logs_one_json_line(
    start: Start, access_lines: list[logging.LogRecord]
) -> None:
    running = start()
    access_lines.clear()  # the probes of start-up are not this test's
    sent = [
        ("POST", "/tickets/predict", 200, running.predict({"X-Request-ID": "log-1"})),
        ("GET", "/nowhere", 404, running.http.get("/nowhere")),
        ("POST", "/tickets/predict", 422, running.http.post("/tickets/predict", json={})),
    ]
    lines = [record.getMessage() for record in access_lines]
    levels = {logging.getLevelName(record.levelno) for record in access_lines}
    if levels - {"INFO"}:
        raise AssertionError(f"Access lines are written at level INFO; these were {levels}.")
    if len(lines) != len(sent):
        raise AssertionError(
            f"{len(sent)} requests must write {len(sent)} records to the "
            f"'production.access' logger, one each; got {len(lines)}: {lines}."
        )
    for line, (method, path, status, response) in zip(lines, sent, strict=True):
        try:
            fields = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(
                f"An access log line must be one JSON object; got {line!r}."
            ) from None
        if not isinstance(fields, dict) or not all(key in fields for key in LOG_KEYS):
            raise AssertionError(
                f"An access log line must be a JSON object with the keys {list(LOG_KEYS)}; "
                f"got {line!r}."
            )
        expected = {
            "method": method,
            "path": path,
            "status": status,
            "request_id": response.headers.get("x-request-id"),
        }
        expect_equal(
            {key: fields[key] for key in expected},
            expected,
            f"the log line of {method} {path} (the request id: the one its answer carries)",
        )
        duration = fields["duration_ms"]
        if isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0:
            raise AssertionError(f"duration_ms must be a number of milliseconds; got {line!r}.")


def test_a_request_that_fails_is_logged_too(
    start: Start, access_lines: list[logging.LogRecord]
) -> None:
    running = start()
    expect_status(running.predict(), 200)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the model failed on purpose")

    running.model.loaded.pipeline.predict_proba = broken  # type: ignore[method-assign]
    access_lines.clear()
    # A client of its own: the fixture's raises the app's error instead of answering 500.
    with TestClient(running.app, raise_server_exceptions=False) as client:
        failed = client.post("/tickets/predict", json=TICKET, headers={"X-Request-ID": "fail-1"})
    expect_status(failed, 500)
    lines = [json.loads(record.getMessage()) for record in access_lines]
    found = [line for line in lines if line.get("request_id") == "fail-1"]
    if [line.get("status") for line in found] != [500]:
        raise AssertionError(
            "POST /tickets/predict with X-Request-ID fail-1 raised in the app (the client got "
            f"500); the access log must still get one line for it with status 500. Got {lines}. "
            "Write the line in a `finally`, with 500 as the status until the app sends one."
        )


def test_the_middleware_does_not_hold_back_a_stream(
    start: Start, access_lines: list[logging.LogRecord]
) -> None:
    running = start()
    access_lines.clear()  # the probes of start-up are not this test's
    body = {"message": "How do I reset my password?", "max_tokens": 8}
    with running.http.stream("POST", "/chat/stream", json=body) as response:
        expect_status(response, 200)
        request_id_of(response, "POST /chat/stream")
        chunks = response.iter_text()
        first = ""
        while "\n\n" not in first:
            try:
                first += next(chunks)
            except StopIteration:
                break
        held = running.chat.tokens_yielded
        running.chat.release()
        rest = "".join(chunks)
    if held != 1:
        raise AssertionError(
            "POST /chat/stream: the first event reached the client only after the model had "
            f"produced {held} tokens (the rest were held back until the first arrived). "
            "The middleware must pass each message on to `send` as it comes, never collect them."
        )
    events = parse_sse(first + rest)
    expect_equal(events[-1], {"event": "done", "data": "[DONE]"}, "the last event of the stream")
    statuses = [json.loads(record.getMessage()).get("status") for record in access_lines]
    expect_equal(statuses, [200], "the statuses in the access log lines of the stream")


# --- CORS -----------------------------------------------------------------------------------


def preflight(running: Running, origin: str) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key, x-request-id",
    }
    return running.http.options("/tickets/predict", headers=headers)


def test_cors_lets_a_configured_origin_in(start: Start) -> None:
    running = start()
    answer = preflight(running, ALLOWED)
    expect_status(answer, 200)
    expect_equal(
        answer.headers.get("access-control-allow-origin"),
        ALLOWED,
        f"the Access-Control-Allow-Origin of a preflight from {ALLOWED} (in SERVICE_CORS_ORIGINS)",
    )
    response = running.predict({"Origin": ALLOWED})
    expect_status(response, 200)
    expect_equal(
        response.headers.get("access-control-allow-origin"),
        ALLOWED,
        f"the Access-Control-Allow-Origin of a POST from {ALLOWED}",
    )
    exposed = response.headers.get("access-control-expose-headers", "").lower()
    names = {name.strip() for name in exposed.split(",")}
    if not {"x-request-id", "retry-after"} <= names:
        raise AssertionError(
            "A browser script can read only the headers CORS exposes: the POST from "
            f"{ALLOWED} must have X-Request-ID and Retry-After in "
            f"Access-Control-Expose-Headers; got {exposed!r}."
        )


def test_cors_refuses_an_origin_not_configured(start: Start) -> None:
    running = start()
    expect_status(preflight(running, ALLOWED), 200)
    answer = preflight(running, OTHER)
    expect_status(answer, 400)
    response = running.predict({"Origin": OTHER})
    for what, got in (("preflight", answer), ("POST", response)):
        allowed = got.headers.get("access-control-allow-origin")
        if allowed is not None:
            raise AssertionError(
                f"A {what} from {OTHER} (not in SERVICE_CORS_ORIGINS) must get no "
                f"Access-Control-Allow-Origin; got {allowed!r}."
            )


# --- Liveness and readiness -------------------------------------------------------------------


def test_live_answers_at_once_and_ready_waits_for_the_model(start: Start) -> None:
    running = start(live=True, hold_loading=True)
    body = expect_json(running.http.get("/health/live"))
    expect_equal(body, {"status": "ok"}, "GET /health/live while the model loads")
    not_ready = expect_json(running.http.get("/health/ready"), 503)
    expect_equal(not_ready, {"status": "loading"}, "GET /health/ready while the model loads")
    refused = running.predict()
    expect_error(refused, 503, "not_ready")
    expect_retry_after(refused, 60, "The 503 of a prediction while the model loads")
    running.model.loading_gate.set()
    running.wait_ready()
    expect_equal(
        expect_json(running.http.get("/health/ready")), {"status": "ok"}, "GET /health/ready"
    )
    expect_status(running.predict(), 200)


def test_ready_is_503_when_the_database_is_unreachable(start: Start) -> None:
    running = start()
    expect_status(running.http.get("/health/ready"), 200)
    running.database.unlink()  # the database is gone: the service cannot do its job
    body = expect_json(running.http.get("/health/ready"), 503)
    expect_equal(body, {"status": "unavailable"}, "GET /health/ready without its database")
    expect_json(running.http.get("/health/live"))  # alive all the same: no restart needed


# --- Metrics and traces ---------------------------------------------------------------------


def telemetry() -> tuple[dict[str, Any], Any, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    reader, spans = InMemoryMetricReader(), InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    providers = {
        "meter_provider": MeterProvider(metric_readers=[reader]),
        "tracer_provider": tracer_provider,
    }
    return providers, reader, spans


def duration_points(reader: Any) -> list[dict[str, Any]]:
    """The attributes of each http.server.request.duration point the reader holds."""
    data = reader.get_metrics_data()
    points: list[dict[str, Any]] = []
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "http.server.request.duration":
                    points += [dict(point.attributes) for point in metric.data.data_points]
    return points


def test_telemetry_records_each_route(start: Start) -> None:
    providers, reader, spans = telemetry()
    running = start(providers=providers)
    expect_status(running.predict(), 200)
    routes = {
        (p.get("http.route"), p.get("http.response.status_code")) for p in duration_points(reader)
    }
    if ("/tickets/predict", 200) not in routes:
        raise AssertionError(
            "After a 200 from POST /tickets/predict, the meter provider given to create_app() "
            "holds no http.server.request.duration point for the route /tickets/predict "
            f"with status 200 (it holds {sorted(routes, key=str)}). Give FastAPI(telemetry=...) "
            "the providers create_app() receives."
        )
    names = [span.name for span in spans.get_finished_spans()]
    if "POST /tickets/predict" not in names:
        raise AssertionError(
            "The tracer provider given to create_app() got no span 'POST /tickets/predict'; "
            f"its spans: {names}."
        )


def test_telemetry_leaves_out_the_probes(start: Start) -> None:
    providers, reader, spans = telemetry()
    running = start(providers=providers)
    expect_status(running.http.get("/health/live"), 200)
    expect_status(running.predict(), 200)
    routes = {p.get("http.route") for p in duration_points(reader)}
    if "/tickets/predict" not in routes:
        raise AssertionError(
            "POST /tickets/predict left no http.server.request.duration point in the meter "
            "provider given to create_app()."
        )
    probes = sorted(str(route) for route in routes if str(route).startswith("/health"))
    probes += [span.name for span in spans.get_finished_spans() if "/health" in span.name]
    if probes:
        raise AssertionError(
            "The probes (GET /health/live and /health/ready) must not be in the metrics or "
            f"traces: they come every few seconds and say nothing. Found {probes}."
        )


# --- Overload: a concurrency bound and a rate limit --------------------------------------------


def predict_once_free(running: Running) -> httpx.Response:
    """POST a prediction; while it is refused as overloaded, retry (for a short while).

    A slot held by a `yield` dependency is given back when its exit code runs, which may
    be just after the client got its answer: the next request can come a moment early.
    """
    deadline = time.monotonic() + PROBE_TIMEOUT
    while True:
        # A new key each time: the retries must not use up a rate limit.
        response = running.predict({"X-API-Key": uuid.uuid4().hex})
        if response.status_code != 503 or time.monotonic() > deadline:
            if response.status_code == 503:
                raise OutOfTime(
                    "Every prediction in flight has been answered, yet POST /tickets/predict "
                    f"is still refused with 503 after {PROBE_TIMEOUT:g} s: a slot is never "
                    "given back. Give it back when the request is done, also when it fails "
                    "(try/finally)."
                )
            return response
        time.sleep(0.005)


def test_a_full_house_is_a_503_with_retry_after(start: Start) -> None:
    running = start(live=True, hold_predictions=True, max_in_flight=2, rate_limit="2/minute")
    held = [running.send({"X-API-Key": "key-a"}), running.send({"X-API-Key": "key-b"})]
    if not running.model.wait_for_calls(2):
        raise OutOfTime(
            f"Two POST /tickets/predict with SERVICE_MAX_IN_FLIGHT=2: the model got "
            f"{running.model.calls} of them within {PROBE_TIMEOUT:g} s."
        )
    third = running.send({"X-API-Key": "key-a"})  # key-a's second of 2 a minute
    try:
        refused = third.result(timeout=PROBE_TIMEOUT)
    except TimeoutError:
        raise AssertionError(
            "With SERVICE_MAX_IN_FLIGHT=2 and two predictions in flight, a third POST "
            f"/tickets/predict got no answer within {PROBE_TIMEOUT:g} s: it waits for a slot. "
            "It must be refused at once with a 503 (Depends(max_concurrency=...) waits; it "
            "never refuses)."
        ) from None
    expect_error(refused, 503, "overloaded")
    expect_retry_after(refused, 60, "The 503 of an overloaded service")
    over = running.predict({"X-API-Key": "key-a"})  # key-a's third: over its rate limit
    if over.status_code != 429:
        raise AssertionError(
            "SERVICE_RATE_LIMIT=2/minute: key-a's third request, sent while the house was "
            f"full, got {over.status_code} {over.text!r}. The rate limit comes first: it "
            "counts every request, a refused one too, and answers 429 before a slot is sought."
        )
    running.model.prediction_gate.set()
    for future in held:
        expect_status(future.result(), 200)
    for _ in range(3):  # the slots are free again, each time
        expect_status(predict_once_free(running), 200)
    expect_equal(running.model.calls, 5, "the model calls (never for the refused request)")


def test_a_slot_is_given_back_however_its_block_ends(exercise: Callable[[str], Any]) -> None:
    module = exercise("app")
    service = __import__("service")

    async def scenario() -> list[str]:
        limit = module.ConcurrencyLimit(1)
        seen: list[str] = []
        with suppress(RuntimeError):
            async with limit.slot():
                raise RuntimeError("the request failed")
        try:
            async with limit.slot():
                seen.append("a slot taken after a failure")
                try:
                    async with limit.slot():
                        seen.append("a second slot taken too")
                except service.OverloadedError:
                    seen.append("a second slot refused")
        except service.OverloadedError:
            seen.append("refused after a failure")
        return seen

    expect_equal(
        asyncio.run(scenario()),
        ["a slot taken after a failure", "a second slot refused"],
        "ConcurrencyLimit(1) called directly: a block that raised, then a slot, and within "
        "it a second one (a slot must be given back however its block ends: try/finally)",
    )


def test_the_rate_limit_counts_per_api_key(start: Start) -> None:
    running = start(rate_limit="3/minute")
    first_hit = time.monotonic()
    for number in (1, 2, 3):
        response = running.predict({"X-API-Key": "key-a"})
        if response.status_code != 200:
            raise AssertionError(
                f"SERVICE_RATE_LIMIT=3/minute: request {number} with X-API-Key key-a got "
                f"{response.status_code} {response.text!r}; it must get 200."
            )
    refused = running.predict({"X-API-Key": "key-a"})
    expect_error(refused, 429, "rate_limited")
    retry_after = expect_retry_after(refused, 60, "The 429 of the fourth request of key-a")
    # The window lets key-a in again 60 s after its first request: that is what is left of
    # it, in whole seconds (the time the test took so far is allowed for, however long).
    least = 60 - math.ceil(time.monotonic() - first_hit) - 1
    if retry_after < least:
        raise AssertionError(
            f"key-a made 3 requests within {time.monotonic() - first_hit:.1f} s with "
            f"SERVICE_RATE_LIMIT=3/minute; its fourth got Retry-After {retry_after}, but the "
            f"window lets it in again only in {least} s or more. Compute it from the "
            "limiter's window stats (reset_time - now, rounded up)."
        )
    other = running.predict({"X-API-Key": "key-b"})
    if other.status_code != 200:
        raise AssertionError(
            "key-a used up its 3 requests a minute; the first request with X-API-Key key-b "
            f"got {other.status_code} {other.text!r}. Each key has its own limit."
        )


def test_without_a_key_the_rate_limit_counts_per_address(start: Start) -> None:
    running = start(rate_limit="2/minute")
    for _ in range(2):
        expect_status(running.predict(), 200)
    refused = running.predict()
    expect_error(refused, 429, "rate_limited")
    expect_retry_after(refused, 60, "The 429 of the third keyless request in a minute")
    expect_status(running.predict({"X-API-Key": "key-a"}), 200)


def test_bounded_input(start: Start) -> None:
    running = start()
    expect_status(running.predict({"X-API-Key": "k" * 128}), 200)
    expect_error(running.predict({"X-API-Key": "k" * 129}), 422, "validation_error")
    for bad in ({"text": "x" * 2001}, {"text": "   "}, {}):
        expect_error(running.http.post("/tickets/predict", json=bad), 422, "validation_error")
    big = b'{"text": "' + b"x" * 20_000 + b'"}'
    expect_status(running.http.post("/tickets/predict", content=big), 413)


# --- Shutdown -----------------------------------------------------------------------------------


def watch_lifespan(
    events: list[str], leftover: list[Any], opened: Callable[[], None]
) -> Callable[[Any], None]:
    """Wrap the app's lifespan: record when shutdown is over and the tasks it left running."""

    def observe(app: Any) -> None:
        original = app.router.lifespan_context

        @asynccontextmanager
        async def observed(app: Any) -> Any:
            before = asyncio.all_tasks()
            async with original(app) as state:
                started = asyncio.all_tasks() - before  # the tasks your start-up made
                yield state
                events.append("shutdown began")
            events.append("shutdown over")
            leftover.extend(task for task in started if not task.done())
            opened()  # a held load may go on now: the thread it runs in can end

        app.router.lifespan_context = observed

    return observe


def test_shutdown_lets_requests_in_flight_finish(start: Start) -> None:
    events: list[str] = []
    leftover: list[Any] = []
    gates: list[GatedModel] = []
    running = start(
        live=True,
        hold_predictions=True,
        observe=watch_lifespan(events, leftover, lambda: gates[0].open()),
    )
    gates.append(running.model)
    prediction = running.send()
    body = {"message": "Where is my parcel?", "max_tokens": 6}
    stream = running.pool.submit(lambda: running.http.post("/chat/stream", json=body))
    if not running.model.wait_for_calls(1) or not running.chat.wait_for_tokens(1, PROBE_TIMEOUT):
        raise OutOfTime("A prediction and a stream did not start within the probe time.")
    assert running.server is not None
    running.server.stop(wait=False)  # what SIGTERM does: stop taking requests, finish the rest
    running.model.prediction_gate.set()
    running.chat.release()
    expect_status(prediction.result(), 200)
    streamed = stream.result()
    expect_status(streamed, 200)
    expect_equal(
        parse_sse(streamed.text)[-1],
        {"event": "done", "data": "[DONE]"},
        "the last event of a stream in flight when the server was asked to stop",
    )
    running.server.thread.join(READ_TIMEOUT)
    expect_equal(events, ["shutdown began", "shutdown over"], "the lifespan's shutdown")
    if leftover:
        raise AssertionError(
            f"After shutdown, task(s) your lifespan started still run: {leftover}."
        )


def test_a_shutdown_during_start_up_leaves_no_task_running(start: Start) -> None:
    events: list[str] = []
    leftover: list[Any] = []
    gates: list[GatedModel] = []
    running = start(
        hold_loading=True, observe=watch_lifespan(events, leftover, lambda: gates[0].open())
    )
    gates.append(running.model)
    expect_status(running.http.get("/health/live"), 200)
    expect_status(running.http.get("/health/ready"), 503)
    running.http.__exit__(None, None, None)  # shut down while the model still loads
    expect_equal(events, ["shutdown began", "shutdown over"], "the lifespan's shutdown")
    if leftover:
        raise AssertionError(
            f"The app was shut down while the model loaded; after its shutdown, "
            f"{len(leftover)} task(s) its lifespan started still run: "
            f"{[task.get_coro() for task in leftover]}. At shutdown, cancel the loading task "
            "and await it."
        )
