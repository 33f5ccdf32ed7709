"""Graded tests for step 07. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/07_background_jobs`. Points and hints live in
course.toml. Every test gets its own database file (the `database` fixture sets
JOBS_DATABASE_PATH before your app.py is imported) and a fresh import of app.py
(`service`) and of the given modules it imports. Two kinds of client are used:

- `TestClient` runs the background tasks of a request *before* it hands you the
  response, so after `client.post(...)` the job has already finished: good for
  checking what a finished job records.
- `live_server` is your app under a real uvicorn server, where the response leaves
  first and the task runs after it. There, a scorer that waits for the test (a gate
  the test opens) shows what the service says while a job is not finished yet.
"""

import inspect
import json
import logging
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from fastapi.testclient import TestClient

from autograder.expect import (
    OutOfTime,
    expect_equal,
    expect_exact_keys,
    expect_fields,
    expect_json,
    expect_status,
    expect_validation_error,
    shown,
)
from coursekit.models import load_count, load_model, reset_load_counts

TICKETS = [
    "I was charged twice for my subscription this month",
    "The app crashes every time I open the settings page",
    "I forgot my password and cannot log in to my account",
    "My parcel has not arrived and the tracking has not moved",
]
BODY_LIMIT = 1_048_576  # bytes: MAX_BODY_SIZE in the statement
TEXT_LIMIT = 2000  # characters per text: MAX_TEXT_LENGTH
JSON_HEADERS = {"content-type": "application/json"}
HTTP_TIMEOUT = 2.0  # seconds a request to the live server may take
GATE_TIMEOUT = 4.0  # a gated scorer gives up after this, so a failing test never hangs

# The model the results are compared with. Loaded here, while the tests are collected,
# because the first load in a process takes seconds (it imports skops): that time then
# counts against no test's time limit.
REFERENCE_MODEL = load_model("tickets")


@pytest.fixture(autouse=True)
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh database file for each test, set before app.py is imported."""
    path = tmp_path / "jobs.sqlite3"
    monkeypatch.setenv("JOBS_DATABASE_PATH", str(path))
    return path


@pytest.fixture
def service(exercise: Any) -> ModuleType:
    """Your app.py, freshly imported: its `app`, `get_scorer` and `Prediction`."""
    return exercise("app")


def given(name: str) -> ModuleType:
    """A given module (`job_database`, ...), as your app.py imported it."""
    return sys.modules[name]


@pytest.fixture
def app(service: ModuleType) -> Any:
    """The FastAPI app of `service` (the grader's `client` and `live_server` use it)."""
    return service.app


class GatedScorer:
    """A scorer that waits inside the job until the test calls `open()`.

    `started` is set as soon as the job calls it. It returns `fake_predictions(texts)`.
    """

    def __init__(self, service: ModuleType) -> None:
        self.service = service
        self.started = threading.Event()
        self._gate = threading.Event()

    def open(self) -> None:
        self._gate.set()

    def __call__(self, texts: list[str]) -> list[Any]:
        self.started.set()
        if not self._gate.wait(GATE_TIMEOUT):
            raise TimeoutError("the test never opened the gate")
        return fake_predictions(self.service, texts)


def fake_predictions(service: ModuleType, texts: list[str]) -> list[Any]:
    """One made-up Prediction per text, different for each position.

    The confidences have all their digits (1/3 = 0.3333333333333333, ...), so results
    that were rounded on the way to the database do not compare equal.
    """
    return [
        service.Prediction(label=f"label-{index}", confidence=1 / (index + 3))
        for index, _ in enumerate(texts)
    ]


def dumped(predictions: list[Any]) -> list[dict[str, Any]]:
    """Predictions as the JSON of GET /jobs/{id} shows them."""
    return [prediction.model_dump() for prediction in predictions]


class RecordingScorer:
    """A scorer that notes every batch it is called with and returns fake predictions."""

    def __init__(self, service: ModuleType) -> None:
        self.service = service
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[Any]:
        self.calls.append(list(texts))
        return fake_predictions(self.service, texts)


class ScorerBroke(Exception):
    """What the failing scorers raise: a plain Exception, not a ValueError."""


def use_scorer(service: ModuleType, scorer: Any) -> None:
    """Make `get_scorer` provide `scorer` to every request."""
    service.app.dependency_overrides[service.get_scorer] = lambda: scorer


def live_request(http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A request to the live server; a request that does not answer fails with a reason."""
    try:
        return http.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise AssertionError(
            f"{method} {url} got no answer within {HTTP_TIMEOUT} s while a job's scorer was "
            "waiting for the test. Either the request itself waited for the work (schedule "
            "it with background_tasks.add_task and return at once), or the job blocks the "
            "event loop (make the job function a plain `def`, not `async def`)."
        ) from None


def accepted_job_id(response: Any) -> str:
    """The job id in the 202 answer of POST /jobs."""
    body = expect_json(response, 202)
    job_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(job_id, str) or not job_id:
        raise AssertionError(
            f'POST /jobs answered {shown(body)}: expected a non-empty string "id".'
        )
    return job_id


def submit(client: TestClient, texts: list[str]) -> str:
    """POST /jobs with a TestClient, which also runs the job; return the job id."""
    return accepted_job_id(client.post("/jobs", json={"texts": texts}))


def watch_final_write(service: ModuleType, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set once run_job has recorded the job as "succeeded" or "failed".

    It wraps your update_job, so the test waits for exactly that write, not a guessed time.
    """
    written = threading.Event()
    original = service.update_job

    def update_job(database_path: Path, job_id: str, job_status: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return original(database_path, job_id, job_status, *args, **kwargs)
        finally:
            if job_status in ("succeeded", "failed"):
                written.set()

    monkeypatch.setattr(service, "update_job", update_job)
    return written


def expect_scorer_called(scorer: GatedScorer) -> None:
    if not scorer.started.wait(GATE_TIMEOUT):
        raise OutOfTime(
            "The job never called the scorer that get_scorer provides. Take the scorer "
            "with Depends(get_scorer) in POST /jobs and pass it to the background task."
        )


def test_post_answers_202_with_a_job_id_before_the_work_runs(service, live_server):
    scorer = GatedScorer(service)
    use_scorer(service, scorer)
    with httpx.Client(base_url=live_server, timeout=HTTP_TIMEOUT, trust_env=False) as http:
        try:
            response = live_request(http, "POST", "/jobs", json={"texts": TICKETS[:2]})
            job_id = accepted_job_id(response)
            expect_exact_keys(response.json(), ["id", "status"], "the 202 answer of POST /jobs")
            expect_fields(response.json(), {"status": "queued"}, "the 202 answer of POST /jobs")
            expect_scorer_called(scorer)
            job = expect_json(live_request(http, "GET", f"/jobs/{job_id}"))
            if job.get("status") not in ("queued", "running"):
                raise AssertionError(
                    f"GET /jobs/{job_id} while the scorer still waits: expected status "
                    f'"queued" or "running", got {shown(job)}.'
                )
        finally:
            scorer.open()


def test_the_location_header_points_to_the_job(client):
    response = client.post("/jobs", json={"texts": TICKETS[:1]})
    job_id = accepted_job_id(response)
    location = response.headers.get("location")
    if not location:
        raise AssertionError(
            "POST /jobs answered 202 without a Location header: it should give the URL "
            f"where the job can be polled, /jobs/{job_id}."
        )
    job = expect_json(client.get(urljoin(str(response.url), location)))
    expect_fields(job, {"id": job_id}, f"GET {location} (the Location of the new job)")


def test_a_job_reports_running_while_it_works_then_succeeded(service, live_server, monkeypatch):
    scorer = GatedScorer(service)
    finished = watch_final_write(service, monkeypatch)
    use_scorer(service, scorer)
    with httpx.Client(base_url=live_server, timeout=HTTP_TIMEOUT, trust_env=False) as http:
        try:
            response = live_request(http, "POST", "/jobs", json={"texts": TICKETS})
            job_id = accepted_job_id(response)
            expect_scorer_called(scorer)
            job = expect_json(live_request(http, "GET", f"/jobs/{job_id}"))
            expect_fields(
                job,
                {"id": job_id, "status": "running", "results": None, "error": None},
                f"GET /jobs/{job_id} while the scorer is working",
            )
        finally:
            scorer.open()
        if not finished.wait(GATE_TIMEOUT):
            raise OutOfTime(
                f"the scorer of job {job_id} returned, but run_job never recorded the job "
                'as "succeeded" (or "failed") with update_job.'
            )
        job = expect_json(live_request(http, "GET", f"/jobs/{job_id}"))
    expected = dumped(fake_predictions(service, TICKETS))
    expect_fields(
        job,
        {"status": "succeeded", "results": expected, "error": None},
        f"GET /jobs/{job_id} once the scorer has returned",
    )


def test_a_finished_job_holds_the_models_predictions_in_order(client):
    expected = [
        (REFERENCE_MODEL.classes[int(row.argmax())], float(row.max()))
        for row in REFERENCE_MODEL.pipeline.predict_proba(TICKETS)
    ]
    job_id = submit(client, TICKETS)
    job = expect_json(client.get(f"/jobs/{job_id}"))
    expect_fields(job, {"status": "succeeded", "error": None}, f"GET /jobs/{job_id}")
    results = job.get("results")
    if not isinstance(results, list) or len(results) != len(TICKETS):
        raise AssertionError(
            f"GET /jobs/{job_id}: expected results to be a list of {len(TICKETS)} predictions "
            f"(one per text), got {shown(results)}."
        )
    for index, (result, (label, confidence)) in enumerate(zip(results, expected, strict=True)):
        what = f"results[{index}], the prediction for {TICKETS[index]!r}"
        expect_fields(result, {"label": label}, what)
        # Same model, same texts, same floats: the confidence is compared exactly.
        if result.get("confidence") != confidence:
            raise AssertionError(
                f"{what}: expected confidence {confidence} (the model's probability for "
                f"{label!r}, exactly as the scorer returned it, not rounded), got "
                f"{shown(result.get('confidence'))}."
            )


def test_the_scorer_is_called_once_with_the_whole_batch(service, app):
    scorer = RecordingScorer(service)
    use_scorer(service, scorer)
    with TestClient(app) as client:
        job_id = submit(client, TICKETS)
        job = expect_json(client.get(f"/jobs/{job_id}"))
    expect_equal(
        scorer.calls,
        [TICKETS],
        f"the batches the scorer was called with for one job of {len(TICKETS)} texts "
        "(call scorer(texts) once, with all the texts in order)",
    )
    expect_fields(
        job,
        {"status": "succeeded", "results": dumped(fake_predictions(service, TICKETS))},
        f"GET /jobs/{job_id} (the results exactly as the scorer returned them)",
    )


def test_the_job_is_recorded_as_queued_before_its_task_runs(service, app, monkeypatch):
    scheduled: list[dict[str, Any]] = []

    def run_job_held(database_path: Path, job_id: str, texts: list[str], scorer: Any) -> None:
        # Stands in for your run_job: it notes what it was given and does no work, so
        # the job stays exactly as POST /jobs recorded it.
        scheduled.append({"job_id": job_id, "texts": list(texts), "scorer": scorer})

    monkeypatch.setattr(service, "run_job", run_job_held)
    scorer = RecordingScorer(service)
    use_scorer(service, scorer)
    with TestClient(app) as client:
        job_id = accepted_job_id(client.post("/jobs", json={"texts": TICKETS[:3]}))
        if len(scheduled) != 1:
            raise AssertionError(
                f"POST /jobs scheduled run_job {len(scheduled)} time(s), expected once: "
                "background_tasks.add_task(run_job, database_path, job_id, texts, scorer)."
            )
        expect_fields(
            scheduled[0],
            {"job_id": job_id, "texts": TICKETS[:3]},
            "the job_id and texts POST /jobs scheduled run_job with",
        )
        if scheduled[0]["scorer"] is not scorer:
            raise AssertionError(
                "POST /jobs scheduled run_job with a scorer that is not the one "
                "get_scorer provides: take it with Depends(get_scorer) and pass it on."
            )
        response = client.get(f"/jobs/{job_id}")
        if response.status_code == 404:
            raise AssertionError(
                f"GET /jobs/{job_id} answered 404 after POST /jobs answered, while its task "
                "had not run yet: record the job as queued (insert_job) in the route, "
                "before it answers, not in the task."
            )
        expect_fields(
            expect_json(response),
            {"id": job_id, "status": "queued", "results": None, "error": None},
            f"GET /jobs/{job_id} before the job's task has run",
        )


def test_the_job_store_keeps_each_job_in_the_file_it_is_given(service, database, tmp_path):
    # Another file than the app's: the store functions use the path they are given.
    path = tmp_path / "store.sqlite3"
    given("job_database").init_database(path)
    given("job_database").init_database(database)
    service.insert_job(path, "job-a", ["one", "two"])
    service.insert_job(path, "job-b", ["three"])

    def expect_job(job_id: str, expected: dict[str, Any], what: str) -> None:
        job = service.find_job(path, job_id)
        if not isinstance(job, service.Job):
            raise AssertionError(f"{what}: find_job returned {job!r}, expected a Job.")
        expect_fields(job.model_dump(), {"id": job_id, **expected}, what)

    nothing = {"results": None, "error": None}
    expect_job("job-a", {"status": "queued", **nothing}, 'find_job after insert_job("job-a")')
    service.update_job(path, "job-a", "running")
    expect_job(
        "job-a", {"status": "running", **nothing}, 'find_job after update_job(... "running")'
    )
    predictions = fake_predictions(service, ["one", "two"])
    service.update_job(path, "job-a", "succeeded", results=predictions)
    expect_job(
        "job-a",
        {"status": "succeeded", "results": dumped(predictions), "error": None},
        'find_job after update_job(... "succeeded", results=...)',
    )
    service.update_job(path, "job-b", "failed", error="it broke")
    expect_job(
        "job-b",
        {"status": "failed", "results": None, "error": "it broke"},
        'find_job after update_job(... "failed", error="it broke")',
    )
    expect_job(
        "job-a",
        {"status": "succeeded", "results": dumped(predictions)},
        'find_job("job-a") after job-b was updated (update only the row of its id)',
    )
    expect_equal(service.find_job(path, "no-such-job"), None, 'find_job("no-such-job")')
    with closing(sqlite3.connect(path)) as connection:
        row = connection.execute("SELECT results FROM jobs WHERE id = 'job-a'").fetchone()
    if row is None or not isinstance(row[0], str):
        raise AssertionError(
            "insert_job and update_job wrote job-a somewhere else than the database_path "
            f"they were given ({path.name}): the jobs table there holds {shown(row)}."
        )
    try:
        stored = json.loads(row[0])
    except json.JSONDecodeError:
        raise AssertionError(
            f"the results column of job-a is not JSON: {shown(row[0])}. Store "
            "json.dumps([prediction.model_dump() for prediction in results])."
        ) from None
    expect_equal(stored, dumped(predictions), "the results column of job-a, decoded as JSON")
    expect_equal(
        service.find_job(database, "job-a"),
        None,
        "find_job on another database file than the one job-a was inserted into",
    )


def test_run_job_records_any_exception_and_never_raises(service, database):
    given("job_database").init_database(database)
    failures = [
        ScorerBroke("the scorer broke on purpose"),
        RuntimeError("the model server went away"),
        KeyError("missing column"),
    ]
    for index, failure in enumerate(failures):
        job_id = f"job-{index}"
        service.insert_job(database, job_id, TICKETS[:1])

        def scorer(texts: list[str], failure: Exception = failure) -> list[Any]:
            raise failure

        what = f"run_job with a scorer that raises {type(failure).__name__}({str(failure)!r})"
        try:
            outcome = service.run_job(database, job_id, TICKETS[:1], scorer)
        except Exception as escaped:
            raise AssertionError(
                f"{what} let {type(escaped).__name__} escape. Catch every Exception and "
                'record the job as "failed": nobody is there to catch it for you.'
            ) from None
        if inspect.iscoroutine(outcome):
            outcome.close()
            raise AssertionError(f"{what}: run_job is an async def; keep it a plain def.")
        job = service.find_job(database, job_id)
        expect_fields(
            job.model_dump() if job is not None else None,
            {"status": "failed", "results": None},
            f"find_job after {what}",
        )
        if str(failure) not in (job.error or ""):
            raise AssertionError(
                f"{what}: expected the error to contain the exception's message "
                f"{str(failure)!r}, got {shown(job.error)}."
            )


def test_a_job_whose_scorer_raises_is_recorded_as_failed(service, app):
    def broken_scorer(texts: list[str]) -> list[Any]:
        raise ScorerBroke("the scorer broke on purpose")

    use_scorer(service, broken_scorer)
    # raise_server_exceptions=False: an exception that escapes the task must not stop
    # the test, which checks what the job records instead.
    with TestClient(app, raise_server_exceptions=False) as client:
        job_id = submit(client, TICKETS[:2])
        job = expect_json(client.get(f"/jobs/{job_id}"))
        if job.get("status") == "running":
            raise AssertionError(
                f"GET /jobs/{job_id}: the scorer raised, but the job still says "
                '"running". Catch the exception in the job function and record the job '
                'as "failed" with the error.'
            )
        expect_fields(job, {"status": "failed", "results": None}, f"GET /jobs/{job_id}")
        error = job.get("error")
        if not isinstance(error, str) or "the scorer broke on purpose" not in error:
            raise AssertionError(
                f'GET /jobs/{job_id}: expected "error" to contain the exception\'s message '
                f'"the scorer broke on purpose", got {shown(error)}.'
            )
        # The failure stays with its job: the service goes on taking and running jobs.
        app.dependency_overrides.clear()
        next_id = submit(client, TICKETS[:1])
        job = expect_json(client.get(f"/jobs/{next_id}"))
        expect_fields(job, {"status": "succeeded"}, f"GET /jobs/{next_id} (after a failed job)")
        expect_fields(
            expect_json(client.get(f"/jobs/{job_id}")),
            {"status": "failed", "results": None},
            f"GET /jobs/{job_id}, the failed job, once the next job has succeeded",
        )


def test_an_unknown_job_id_is_a_404(client):
    job_id = submit(client, TICKETS[:1])
    expect_json(client.get(f"/jobs/{job_id}"))
    body = expect_json(client.get("/jobs/no-such-job"), 404)
    if not isinstance(body, dict) or "detail" not in body:
        raise AssertionError(
            'GET /jobs/no-such-job answered 404, but without FastAPI\'s {"detail": ...} '
            f"body. Got {shown(body)}."
        )


def test_an_empty_batch_is_a_422(client):
    submit(client, TICKETS[:1])
    expect_validation_error(client.post("/jobs", json={"texts": []}), loc=["body", "texts"])


def test_a_batch_over_100_texts_is_a_422(client):
    submit(client, ["a ticket"] * 100)
    expect_validation_error(
        client.post("/jobs", json={"texts": ["a ticket"] * 101}), loc=["body", "texts"]
    )


def test_a_finished_job_survives_a_restart(service, exercise):
    with TestClient(service.app) as client:
        job_id = submit(client, TICKETS)
        before = expect_json(client.get(f"/jobs/{job_id}"))
        expect_fields(before, {"status": "succeeded"}, f"GET /jobs/{job_id}")
    # A fresh import is a new process as far as your code can tell: nothing kept in
    # memory survives it, only what is in the database file.
    restarted = exercise("app")
    with TestClient(restarted.app, raise_server_exceptions=False) as client:
        after = expect_json(client.get(f"/jobs/{job_id}"))
    expect_equal(after, before, f"GET /jobs/{job_id} after a restart, on the same database")


def test_job_ids_are_unique_even_across_a_restart(service, exercise):
    first_ids, first_jobs = [], []
    with TestClient(service.app, raise_server_exceptions=False) as client:
        for text in TICKETS:
            job_id = submit(client, [text])
            first_ids.append(job_id)
            first_jobs.append(expect_json(client.get(f"/jobs/{job_id}")))
    restarted = exercise("app")
    with TestClient(restarted.app, raise_server_exceptions=False) as client:
        second_ids = [submit(client, [text, text]) for text in TICKETS]
        # The same batch again: a new job, with a new id.
        second_ids += [submit(client, [TICKETS[0]]), submit(client, [TICKETS[0]])]
        ids = first_ids + second_ids
        expect_equal(len(set(ids)), len(ids), f"the number of different ids among {ids}")
        for job_id, job in zip(first_ids, first_jobs, strict=True):
            expect_equal(
                expect_json(client.get(f"/jobs/{job_id}")),
                job,
                f"GET /jobs/{job_id}, a job from before the restart",
            )


def test_the_model_is_loaded_once_at_startup(app):
    reset_load_counts()
    with TestClient(app) as client:
        expect_equal(load_count("tickets"), 1, "the tickets model loads at start-up (count)")
        for text in TICKETS:
            job_id = submit(client, [text])
            expect_status(client.get(f"/jobs/{job_id}"), 200)
        expect_equal(load_count("tickets"), 1, f"the tickets model loads after {len(TICKETS)} jobs")


def test_openapi_documents_the_202_answer(client):
    operation = documented_operation(client, "/jobs", "post")
    documented = sorted(operation.get("responses", {}))
    if "202" not in documented or "200" in documented:
        raise AssertionError(
            f"/openapi.json documents the answers {documented} for POST /jobs: expected "
            '"202" among them and no "200" (set the status code in the decorator).'
        )


def test_openapi_documents_every_error_answer(client):
    # The 400 is FastAPI's own answer to a body it cannot decode: it happens, so it is
    # documented.
    expect_status(post_raw(client, b'{"texts": ["\xff"]}'), 400)
    expected = {("/jobs", "post"): ["400", "413"], ("/jobs/{job_id}", "get"): ["404"]}
    for (path, method), statuses in expected.items():
        operation = documented_operation(client, path, method)
        responses = operation.get("responses", {})
        for status in statuses:
            content = responses.get(status, {}).get("content", {}).get("application/json", {})
            name = content.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
            fields = client.app.openapi()["components"]["schemas"].get(name, {}).get("properties")
            if sorted(fields or {}) != ["detail"]:
                raise AssertionError(
                    f"/openapi.json: the {status} answer of {method.upper()} {path} should be "
                    f'documented with the HTTPError model (one field, "detail"); it documents '
                    f"{shown(responses.get(status))}."
                )
    # A body that declares its size gets Starlette's own plain text "Content Too Large",
    # sent before any handler; a streamed one, FastAPI's JSON (checked above).
    too_large = post_raw(client, b"x" * (BODY_LIMIT + 1))
    expect_status(too_large, 413)
    submit = documented_operation(client, "/jobs", "post").get("responses", {}).get("413", {})
    content = submit.get("content", {})
    media = too_large.headers.get("content-type", "").split(";")[0]
    if media not in content:
        raise AssertionError(
            f"/openapi.json: the 413 answer of POST /jobs should be documented as {media} "
            f"(what the app sends); it documents {shown(submit)}."
        )


def documented_operation(client: TestClient, path: str, method: str) -> dict[str, Any]:
    """The operation `method` `path` of /openapi.json; fails if it is not there."""
    operation = expect_json(client.get("/openapi.json")).get("paths", {}).get(path, {})
    if method not in operation:
        raise AssertionError(f"/openapi.json has no {method.upper()} {path} operation.")
    return operation[method]


def post_raw(client: TestClient, content: bytes | Iterator[bytes]) -> httpx.Response:
    """POST /jobs with these bytes as a JSON body: how a test sends a large or broken one."""
    return client.post("/jobs", content=content, headers=JSON_HEADERS)


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with spaces to exactly `size` bytes: still valid JSON."""
    data = json.dumps(body).encode()
    return data + b" " * (size - len(data))


def test_a_body_over_the_size_limit_is_a_413(client):
    chunk = 64 * 1024

    def streamed(data: bytes) -> Iterator[bytes]:
        # A generator has no length: the body goes out chunked, without Content-Length.
        for start in range(0, len(data), chunk):
            yield data[start : start + chunk]

    batch = {"texts": TICKETS[:1]}
    accepted_job_id(post_raw(client, padded(batch, BODY_LIMIT)))
    # Content-Length says it is too big: Starlette answers before any handler runs.
    expect_status(post_raw(client, padded(batch, BODY_LIMIT + 1)), 413)
    accepted_job_id(post_raw(client, streamed(padded(batch, BODY_LIMIT))))
    expect_status(post_raw(client, streamed(padded(batch, BODY_LIMIT + 1))), 413)


def test_a_blank_or_too_long_text_is_a_422(client):
    submit(client, ["x" * TEXT_LIMIT, "a ticket"])
    expect_validation_error(
        client.post("/jobs", json={"texts": ["a ticket", "x" * (TEXT_LIMIT + 1)]}),
        loc=["body", "texts", 1],
    )
    expect_validation_error(
        client.post("/jobs", json={"texts": ["   ", "a ticket"]}), loc=["body", "texts", 0]
    )


def test_the_settings_are_read_at_start_up_not_at_import(service, tmp_path, monkeypatch):
    # app.py was imported with JOBS_DATABASE_PATH set to one file; the service now starts
    # with it set to another. The one it starts with is the one it uses.
    started_with = tmp_path / "started-with.sqlite3"
    monkeypatch.setenv("JOBS_DATABASE_PATH", str(started_with))
    with TestClient(service.app, raise_server_exceptions=False) as client:
        response = client.post("/jobs", json={"texts": TICKETS[:1]})
        if response.status_code == 500:
            raise AssertionError(
                "POST /jobs answered 500 when JOBS_DATABASE_PATH changed between the import "
                "of app.py and start-up: the route wrote to the file the settings named at "
                "import, where start-up created no table. Take the path from the `settings` "
                "parameter (SettingsDep), which holds what start-up read."
            )
        job_id = accepted_job_id(response)
        expect_fields(
            expect_json(client.get(f"/jobs/{job_id}")), {"id": job_id}, f"GET /jobs/{job_id}"
        )
    with closing(sqlite3.connect(started_with)) as connection:
        job = connection.execute("SELECT id FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if job is None:
        raise AssertionError(
            f"job {job_id} is not in {started_with.name}, the file JOBS_DATABASE_PATH named "
            "at start-up: read the settings at start-up, never at import."
        )


class WriteRefused(sqlite3.OperationalError):
    """What the refusing update_job raises: SQLite's error for a write that timed out."""


def refuse_writes(service: ModuleType, monkeypatch: pytest.MonkeyPatch, refused: set[str]) -> None:
    """Make update_job raise "database is locked" for the statuses in `refused`."""
    original = service.update_job

    def update_job(database_path: Path, job_id: str, job_status: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if job_status in refused:
            raise WriteRefused("database is locked")
        return original(database_path, job_id, job_status, *args, **kwargs)

    monkeypatch.setattr(service, "update_job", update_job)


def run_job_calmly(service: ModuleType, database: Path, job_id: str, scorer: Any, what: str):  # type: ignore[no-untyped-def]
    """run_job(...), which must neither raise nor be a coroutine."""
    try:
        outcome = service.run_job(database, job_id, TICKETS[:1], scorer)
    except Exception as escaped:
        raise AssertionError(
            f"{what}: run_job let {type(escaped).__name__}({str(escaped)!r}) escape. Guard "
            "the whole job, the writes included, with one try/except Exception."
        ) from None
    if inspect.iscoroutine(outcome):
        outcome.close()
        raise AssertionError(f"{what}: run_job is an async def; keep it a plain def.")


def test_a_write_that_fails_ends_the_job_failed(service, database, monkeypatch):
    given("job_database").init_database(database)
    unstorable = [service.Prediction.model_construct(label="billing", confidence=object())]
    cases = [
        ('update_job(... "succeeded" ...) raises "database is locked"', {"succeeded"}, None),
        ('update_job(... "running") raises "database is locked"', {"running"}, None),
        ("the scorer returns a prediction that cannot be stored as JSON", set(), unstorable),
    ]
    for index, (what, refused, predictions) in enumerate(cases):
        job_id = f"job-{index}"
        given_predictions = predictions or fake_predictions(service, TICKETS[:1])
        service.insert_job(database, job_id, TICKETS[:1])
        with monkeypatch.context() as patch:
            refuse_writes(service, patch, refused)
            run_job_calmly(
                service, database, job_id, lambda texts, made=given_predictions: made, what
            )
        job = service.find_job(database, job_id)
        expect_fields(
            job.model_dump() if job is not None else None,
            {"status": "failed", "results": None},
            f"find_job after run_job, when {what}",
        )
        if not job.error or (refused and "database is locked" not in job.error):
            expected = '"database is locked"' if refused else "the exception's message"
            raise AssertionError(
                f"find_job after run_job, when {what}: expected an error with {expected}, "
                f"got {shown(job.error)}."
            )


def test_run_job_returns_even_when_no_write_works(service, database, monkeypatch, caplog):
    given("job_database").init_database(database)
    service.insert_job(database, "job-0", TICKETS[:1])
    refuse_writes(service, monkeypatch, {"queued", "running", "succeeded", "failed"})
    what = 'every update_job raises "database is locked", "failed" too'
    with caplog.at_level(logging.WARNING):
        run_job_calmly(
            service, database, "job-0", lambda texts: fake_predictions(service, texts), what
        )
    if not any(record.levelno >= logging.WARNING for record in caplog.records):
        raise AssertionError(
            f"{what}: run_job returned, but logged nothing at level WARNING or above. The "
            "job's failure is recorded nowhere: log it (logger.exception(...)), so that "
            "whoever runs the service can see it."
        )
