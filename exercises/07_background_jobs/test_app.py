"""Graded tests for step 07. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/07_background_jobs`. Points and hints live in
course.toml. Every test gets its own database file (the `database` fixture sets
JOBS_DATABASE_PATH before your app.py is imported) and a fresh import of app.py
(`service`). Two kinds of client are used:

- `TestClient` runs the background tasks of a request *before* it hands you the
  response, so after `client.post(...)` the job has already finished: good for
  checking what a finished job records.
- `live_server` is your app under a real uvicorn server, where the response leaves
  first and the task runs after it. There, a scorer that waits for the test (a gate
  the test opens) shows what the service says while a job is not finished yet.
"""

import math
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from fastapi.testclient import TestClient

from autograder.expect import (
    expect_equal,
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
HTTP_TIMEOUT = 2.0  # seconds a request to the live server may take
GATE_TIMEOUT = 4.0  # a gated scorer gives up after this, so a failing test never hangs
POLL_FOR = 3.0  # seconds to wait for a job to finish once its scorer may run

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
    """One made-up Prediction per text, different for each position."""
    return [
        service.Prediction(label=f"label-{index}", confidence=round(1 / (index + 2), 3))
        for index, _ in enumerate(texts)
    ]


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


def wait_until_finished(http: httpx.Client, job_id: str) -> dict[str, Any]:
    """Poll GET /jobs/{job_id} until the job is no longer queued or running."""
    deadline = time.monotonic() + POLL_FOR
    while True:
        job = expect_json(live_request(http, "GET", f"/jobs/{job_id}"))
        if job.get("status") not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def expect_scorer_called(scorer: GatedScorer) -> None:
    if not scorer.started.wait(GATE_TIMEOUT):
        raise AssertionError(
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


def test_a_job_reports_running_while_it_works_then_succeeded(service, live_server):
    scorer = GatedScorer(service)
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
        job = wait_until_finished(http, job_id)
    expected = [prediction.model_dump() for prediction in fake_predictions(service, TICKETS)]
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
        if not math.isclose(result.get("confidence", -1), confidence, abs_tol=1e-6):
            raise AssertionError(
                f"{what}: expected confidence {confidence} (the model's probability for "
                f"{label!r}), got {shown(result.get('confidence'))}."
            )


def test_a_job_whose_scorer_raises_is_recorded_as_failed(service, app):
    def broken_scorer(texts: list[str]) -> list[Any]:
        raise ValueError("the scorer broke on purpose")

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
    schema = expect_json(client.get("/openapi.json"))
    paths = schema.get("paths", {})
    operation = paths.get("/jobs", {}).get("post")
    if operation is None:
        raise AssertionError("/openapi.json has no POST /jobs operation.")
    expect_equal(
        sorted(operation.get("responses", {})),
        ["202", "422"],
        "in /openapi.json, the documented answers of POST /jobs",
    )
    if "get" not in paths.get("/jobs/{job_id}", {}):
        raise AssertionError("/openapi.json has no GET /jobs/{job_id} operation.")
