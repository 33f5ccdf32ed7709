"""Graded tests for step 14. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/14_task_queue`. Points and hints live in course.toml.

Everything here is real: a Valkey server (`coursekit.redis_server.running_server()`, or
the one COURSE_REDIS_URL names), two Celery worker processes that import your `tasks.py`,
and two API processes that import your `app.py`: this one (through `TestClient`) and a
second one under uvicorn. The workers score with the given `DrillScorer` (the tickets
model, with the failures and holds a batch's texts ask for: see scoring.py), so the test
decides when a job fails, and holds a job at a gate until it opens it; it counts the
scorer's calls in the server. Nothing is judged by a stopwatch: the tests wait for what
they expect, up to a generous hang limit.

On Linux and macOS the processes are forked from this one (milliseconds, the model
already loaded); elsewhere (or with AUTOGRADER_SPAWN=1) they are `python -m celery -A
tasks worker --pool=threads` and `python -m uvicorn app:app`, started afresh (seconds).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2 as httpx
import pytest
import redis
from fastapi.testclient import TestClient

import coursekit
import coursekit.models
from autograder.expect import (
    OutOfTime,
    expect_equal,
    expect_fields,
    expect_json,
    expect_status,
    expect_validation_error,
    shown,
)
from coursekit.redis_server import NoServerError, running_server
from coursekit.server import free_port

FORK = hasattr(os, "fork") and not os.environ.get("AUTOGRADER_SPAWN")
# Seconds a test waits for what it expects; a correct solution takes far less. A spawned
# worker (Windows) imports scikit-learn and loads the model before its first job: seconds
# on a fast machine, more on a slow one.
HANG = 20.0 if FORK else 60.0
BODY_LIMIT = 1_048_576
TEXT_LIMIT = 2000
KEY_LIMIT = 128
JSON_HEADERS = {"content-type": "application/json"}

TICKETS = [
    "I was charged twice for my subscription this month.",
    "The app crashes every time I open the settings screen.",
    "My parcel has not arrived and the tracking page is empty.",
]

_reference = coursekit.models.load_model("tickets")


def reference(texts: list[str]) -> list[dict[str, Any]]:
    """The tickets model's predictions for `texts`: what a finished job must hold."""
    rows = _reference.pipeline.predict_proba(texts)
    return [
        {"label": _reference.classes[int(row.argmax())], "confidence": float(row.max())}
        for row in rows
    ]


def batch(*directives: str) -> list[str]:
    """A batch of its own for this test: a unique first text (the drill's name for the
    batch), then the tickets; `directives` go into the first text."""
    return [f"ticket {uuid.uuid4().hex} {' '.join(directives)}".strip(), *TICKETS]


# --- Processes: workers and a second API process, forked or spawned ---------------------


def _learner_folder() -> Path:
    """The folder being graded: the one `tasks` is imported from."""
    import importlib.util

    spec = importlib.util.find_spec("tasks")
    if spec is None or spec.origin is None:
        raise AssertionError("tasks.py cannot be found: did you rename or delete it?")
    return Path(spec.origin).parent


def _forget_learner_modules(folder: Path) -> None:
    """Drop the modules imported from the graded folder, so the next import is fresh."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and Path(file).parent == folder:
            del sys.modules[name]


def _run_worker(queue: str, name: str) -> None:
    """In a forked process: import tasks.py afresh and be a Celery worker, one thread."""
    from celery import _state

    # Each `@celery_app.task` (shared, by default) asks Celery to add its function to
    # every app made later in the process: this process imported tasks.py once per test,
    # and the worker's app would get an earlier import's task, with that import's settings.
    _state._on_app_finalizers.clear()
    tasks = importlib.import_module("tasks")
    worker = tasks.celery_app.Worker(
        # The threads pool, as `--pool=threads`: its worker acknowledges a job as the job
        # starts (unless acks late), as prefork does. The solo pool runs the job inside
        # the event loop that would send that ack, so its ack always comes after the job.
        pool_cls="threads",
        concurrency=1,
        queues=[queue],
        hostname=f"{name}@{socket.gethostname()}",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        loglevel="WARNING",
        quiet=True,
    )
    worker.start()


def _run_api(port: int) -> None:
    """In a forked process: import app.py afresh and serve it with uvicorn."""
    import uvicorn

    module = importlib.import_module("app")
    config = uvicorn.Config(module.app, host="127.0.0.1", port=port, log_level="warning")
    uvicorn.Server(config).run()


@dataclass
class Process:
    pid: int
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            return done == 0
        return False

    def kill(self) -> None:
        """SIGKILL (Windows: TerminateProcess): no clean-up, as when a machine dies."""
        if self.popen is not None:
            self.popen.kill()
            self.popen.wait()
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return "\n".join(lines[-12:])
        return ""


@dataclass
class Cluster:
    """One queue on the server, its workers, and a second API process."""

    url: str
    queue: str
    env: dict[str, str]
    folder: Path
    logs: Path
    workers: list[Process] = field(default_factory=list)
    api: Process | None = None
    api_url: str = ""

    def _start(self, fork_target: Callable[[], None], command: list[str], log: Path) -> Process:
        if FORK:
            pid = os.fork()
            if pid == 0:  # the new process: never returns into pytest
                code = 0
                try:
                    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.dup2(out, 1)
                    os.dup2(out, 2)
                    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
                    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
                    # A process of its own now, not pytest's: Python's warnings (pytest
                    # turns DeprecationWarning into errors, and Celery's result backend
                    # calls a redis-py method that 8.x deprecates) and a log on stderr.
                    warnings.resetwarnings()
                    warnings.simplefilter("ignore", DeprecationWarning)
                    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, force=True)
                    os.environ.update(self.env)
                    _forget_learner_modules(self.folder)
                    fork_target()
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    with contextlib.suppress(Exception):
                        sys.stdout.flush()
                        sys.stderr.flush()
                    os._exit(code)
            return Process(pid, log)
        paths = [str(self.folder), str(Path(coursekit.__file__).resolve().parents[1])]
        env = {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join(paths)}
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", *command],
                cwd=self.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return Process(popen.pid, log, popen)

    def start_worker(self) -> Process:
        name = f"{self.queue}-worker{len(self.workers) + 1}"
        command = ["celery", "-A", "tasks", "worker", "--pool=threads", "--concurrency=1"]
        command += ["-Q", self.queue]
        command += ["-n", f"{name}@%h", "--without-gossip", "--without-mingle"]
        command += ["--without-heartbeat", "--loglevel=WARNING"]
        log = self.logs / f"{name}.log"
        process = self._start(lambda: _run_worker(self.queue, name), command, log)
        self.workers.append(process)
        return process

    def start_api(self) -> None:
        port = free_port()
        command = ["uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--log-level", "warning"]
        log = self.logs / f"{self.queue}-api.log"
        self.api = self._start(lambda: _run_api(port), command, log)
        self.api_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/openapi.json", timeout=HANG).status_code == 200:
                    return
            if not self.api.alive():
                break
            time.sleep(0.01)
        raise OutOfTime(
            "The second API process (uvicorn serving your app.py) did not start. What it "
            f"printed:\n{self.api.tail()}"
        )

    def stop(self) -> None:
        for process in [*self.workers, *([self.api] if self.api else [])]:
            process.kill()

    def workers_said(self) -> str:
        """What the workers printed: shown when a job does not end as expected."""
        parts = [f"--- {p.log.name}\n{p.tail()}" for p in self.workers if p.tail()]
        return ("\nWhat the workers printed:\n" + "\n".join(parts)) if parts else ""


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """The Redis-compatible server every process here shares."""
    try:
        with running_server() as url:
            yield url
    except NoServerError as error:
        raise AssertionError(str(error)) from None


def _new_cluster(url: str, logs: Path, **settings: str) -> Cluster:
    """A queue of its own on the server, and the settings its processes get."""
    queue = f"jobs-{uuid.uuid4().hex[:12]}"
    env = {
        "JOBS_REDIS_URL": url,
        "JOBS_QUEUE": queue,
        "JOBS_SCORER": "drill",
        "JOBS_RETRY_BACKOFF": "0.02",
        **{f"JOBS_{name.upper()}": value for name, value in settings.items()},
    }
    return Cluster(url, queue, env, _learner_folder(), logs)


# What a forked worker or API process imports to start: imported once here, before the
# forks, instead of once in each of them.
WARM = (
    "celery.apps.worker",
    "celery.worker.consumer",
    "celery.concurrency.thread",
    "kombu.transport.redis",
    "uvicorn",
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",
    "uvicorn.protocols.http.auto",
)


@pytest.fixture(scope="module")
def clusters(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Every process this file's tests use, started together before the first test.

    "shared": two workers and a second API process on one queue, for most tests;
    "fragile": two workers whose visibility timeout is half a second, on a queue of their
    own, for the test that kills one of them (on the shared queue, a job held at a gate
    for longer than that would be handed to the other worker too).
    """
    if FORK:
        for name in WARM:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
    logs = tmp_path_factory.mktemp("logs")
    shared = _new_cluster(server_url, logs)
    fragile = _new_cluster(server_url, logs, visibility_timeout="0.5")
    try:
        for cluster in (shared, fragile, shared, fragile):
            cluster.start_worker()
        shared.start_api()
        yield {"shared": shared, "fragile": fragile}
    finally:
        shared.stop()
        fragile.stop()


@pytest.fixture(scope="module")
def cluster(clusters: dict) -> Cluster:
    """Two workers and a second API process, on one queue, shared by this file's tests."""
    return clusters["shared"]


@pytest.fixture(scope="module")
def fragile_cluster(clusters: dict) -> Cluster:
    """Two workers of their own, with a visibility timeout of half a second."""
    return clusters["fragile"]


@dataclass
class Service:
    """Your app in this process, the second API process, and the server's counters."""

    cluster: Cluster
    client: TestClient  # API process 1: this one
    other: httpx.Client  # API process 2: uvicorn, in a process of its own
    server: redis.Redis
    settings: Any  # queue_setup.Settings of this queue
    scoring: ModuleType
    held: list[list[str]] = field(default_factory=list)  # batches that wait at a gate

    def submit(self, texts: list[str], key: str | None = None, via: Any = None) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key is not None else {}
        if any("#hold" in text for text in texts):
            self.held.append(texts)
        try:
            return (via or self.client).post("/jobs", json={"texts": texts}, headers=headers)
        except httpx.TimeoutException:
            raise OutOfTime(
                f"POST /jobs got no answer within {HANG:g} s. It must answer at once, "
                "before any worker has run the job: send the task and return."
            ) from None

    def accepted(self, texts: list[str], key: str | None = None, via: Any = None) -> str:
        """POST /jobs, expect 202 with an id: return the id."""
        response = self.submit(texts, key, via)
        body = expect_json(response, 202)
        job_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise AssertionError(
                f'POST /jobs answered 202 with {shown(body)}: expected a job id in "id".'
            )
        return job_id

    def poll(self, job_id: str, via: Any = None) -> dict[str, Any]:
        try:
            return expect_json((via or self.client).get(f"/jobs/{job_id}"))
        except httpx.TimeoutException:
            raise OutOfTime(f"GET /jobs/{job_id} got no answer within {HANG:g} s.") from None

    def wait_for(
        self, job_id: str, statuses: set[str], via: Any = None, after: str = ""
    ) -> tuple[dict[str, Any], list[str]]:
        """Poll until the job's status is one of `statuses`; return it and all seen."""
        seen: list[str] = []
        deadline = time.monotonic() + HANG
        while True:
            job = self.poll(job_id, via)
            status = job.get("status")
            if not seen or seen[-1] != status:
                seen.append(status)
            if status in statuses:
                return job, seen
            if time.monotonic() > deadline:
                raise OutOfTime(
                    f"GET /jobs/{job_id}{after}: waited {HANG:g} s for the status to become "
                    f"{' or '.join(sorted(statuses))}; the statuses seen were {seen}, the "
                    f"last answer {shown(job)}.{self.cluster.workers_said()}"
                )
            time.sleep(0.01)

    def calls(self, texts: list[str]) -> int:
        """How many times a worker's scorer was called with this batch."""
        return int(self.server.get(self.scoring.drill_key(self.settings, "calls", texts)) or 0)

    def started(self, texts: list[str]) -> list[str]:
        """The process ids of the held calls of this batch that have begun, in order."""
        return self.server.lrange(self.scoring.drill_key(self.settings, "started", texts), 0, -1)

    def wait_started(self, texts: list[str], count: int = 1) -> list[int]:
        """Wait until `count` held calls of this batch have begun; their process ids."""
        deadline = time.monotonic() + HANG
        while len(started := self.started(texts)) < count:
            if time.monotonic() > deadline:
                raise OutOfTime(
                    f"No worker began the job of {texts[0]!r} within {HANG:g} s ({len(started)} "
                    f"of {count} attempts began). Is the task sent to the queue (.delay or "
                    f".apply_async), and does it call get_scorer(settings)(texts)?"
                    f"{self.cluster.workers_said()}"
                )
            time.sleep(0.01)
        return [int(pid) for pid in started]

    def open_gate(self, texts: list[str]) -> None:
        self.scoring.open_gate(self.server, self.settings, texts)


def _service(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, exercise: Callable[[str], ModuleType]
) -> Iterator[Service]:
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    module = exercise("app")
    scoring = sys.modules["scoring"]
    settings = sys.modules["queue_setup"].Settings()
    server = redis.Redis.from_url(cluster.url, decode_responses=True)
    with (
        contextlib.closing(server),
        TestClient(module.app, raise_server_exceptions=False) as client,
        httpx.Client(base_url=cluster.api_url or "http://127.0.0.1:9", timeout=HANG) as other,
    ):
        service = Service(cluster, client, other, server, settings, scoring)
        try:
            yield service
        finally:
            # However the test ended, no held job keeps a shared worker for the next tests.
            for texts in service.held:
                service.open_gate(texts)


@pytest.fixture
def service(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, exercise: Callable[[str], ModuleType]
) -> Iterator[Service]:
    """Your app in this process, on the shared queue, with the workers and API process 2."""
    yield from _service(cluster, monkeypatch, exercise)


def test_job_status_maps_celerys_states(exercise):
    job_status = exercise("app").job_status
    expected = {
        "PENDING": "queued",
        "RECEIVED": "queued",
        "RETRY": "queued",
        "STARTED": "running",
        "SUCCESS": "succeeded",
        "FAILURE": "failed",
        "REVOKED": "failed",
    }
    for state, status in expected.items():
        expect_equal(job_status(state), status, f"job_status({state!r})")


# --- The job's journey across processes -----------------------------------------------


def test_a_job_sent_by_one_api_process_is_run_by_a_worker_and_read_by_another(service):
    texts = batch()
    response = service.submit(texts)
    body = expect_json(response, 202)
    job_id = body.get("id") if isinstance(body, dict) else None
    expect_fields(body, {"status": "queued"}, "POST /jobs")
    if not isinstance(job_id, str) or not job_id:
        raise AssertionError(f'POST /jobs answered {shown(body)}: expected a job id in "id".')
    location = response.headers.get("location", "")
    if not location.endswith(f"/jobs/{job_id}"):
        raise AssertionError(
            f"POST /jobs answered 202 with the Location header {location!r}: expected the "
            f"job's URL, ending in /jobs/{job_id}."
        )
    # Read by the other API process: what it knows comes from the server, not from here.
    job, _ = service.wait_for(
        job_id, {"succeeded", "failed"}, via=service.other, after=" (API process 2)"
    )
    expect_equal(
        job,
        {"id": job_id, "status": "succeeded", "results": reference(texts), "error": None},
        f"GET /jobs/{job_id} on API process 2, once a worker has run the job",
    )
    expect_equal(service.calls(texts), 1, "the scorer's calls for this job, in the workers")


def test_a_job_is_running_while_a_worker_holds_it(service):
    texts = batch("#hold")
    job_id = service.accepted(texts)
    service.wait_started(texts)
    # The worker is inside the scorer, held at the test's gate: the job has begun.
    expect_fields(
        service.poll(job_id),
        {"status": "running", "results": None, "error": None},
        f"GET /jobs/{job_id}, held by a worker",
    )
    service.open_gate(texts)
    job, _ = service.wait_for(job_id, {"succeeded", "failed"}, after=" (gate opened)")
    expect_fields(job, {"status": "succeeded", "results": reference(texts)}, f"GET /jobs/{job_id}")


def test_the_api_answers_while_every_worker_is_busy(service):
    held = [batch("#hold"), batch("#hold")]
    held_ids = [service.accepted(texts, via=service.other) for texts in held]
    try:
        pids = {service.wait_started(texts)[0] for texts in held}
        expect_equal(len(pids), 2, "the worker processes holding the two jobs")
        # Both workers are held: a new job waits in the queue, and the API still answers.
        waiting = batch()
        waiting_id = service.accepted(waiting, via=service.other)
        expect_fields(
            service.poll(waiting_id, via=service.other),
            {"status": "queued", "results": None, "error": None},
            f"GET /jobs/{waiting_id}, while every worker is busy",
        )
        for job_id in held_ids:
            expect_fields(
                service.poll(job_id, via=service.other),
                {"status": "running"},
                f"GET /jobs/{job_id}, held by a worker",
            )
    finally:
        for texts in held:
            service.open_gate(texts)
    job, _ = service.wait_for(waiting_id, {"succeeded", "failed"}, via=service.other)
    expect_fields(job, {"status": "succeeded"}, f"GET /jobs/{waiting_id}, once the gates opened")


def test_a_job_sent_by_its_name_is_run_by_a_worker(service):
    # Another service sends the job knowing only the task's name, with an app of its own
    # (the given one, without your tasks.py): the message names the task to run.
    texts, job_id = batch(), uuid.uuid4().hex
    sender = sys.modules["queue_setup"].create_celery(service.settings)
    try:
        sender.send_task("jobs.score_batch", args=[texts], task_id=job_id)
        result = sender.AsyncResult(job_id)
        deadline = time.monotonic() + HANG
        while (state := result.state) not in {"SUCCESS", "FAILURE"}:
            if time.monotonic() > deadline:
                raise OutOfTime(
                    f"A job sent by name (send_task('jobs.score_batch', ...)) was still "
                    f"{state} after {HANG:g} s.{service.cluster.workers_said()}"
                )
            time.sleep(0.01)
        if state == "FAILURE":
            error = result.result
            if type(error).__name__ == "NotRegistered":
                raise AssertionError(
                    "A job sent by name (send_task('jobs.score_batch', ...)) failed: the "
                    'workers know no task named "jobs.score_batch" (NotRegistered). Register '
                    "the task under that name."
                )
            raise AssertionError(
                f"A job sent by name (send_task('jobs.score_batch', ...)) failed in the "
                f"workers: {shown(f'{type(error).__name__}: {error}')}."
            )
        expect_equal(result.result, reference(texts), "the result of the job sent by name")
    finally:
        sender.close()


# --- Idempotency keys -----------------------------------------------------------------------


def test_a_repeated_post_with_the_same_key_returns_the_same_job(service):
    # The job waits at a gate while it is repeated: a repeat that sent it again would
    # have the idle worker begin a second copy, which the gate holds too.
    texts, key = batch("#hold"), f"key-{uuid.uuid4()}"
    job_id = service.accepted(texts, key)
    service.wait_started(texts)
    # The client did not hear the answer and sends the request again, to either process.
    for via, name in [(service.other, "API process 2"), (service.client, "API process 1")]:
        again = service.submit(texts, key, via=via)
        expect_fields(
            expect_json(again, 202),
            {"id": job_id, "status": "queued"},
            f"POST /jobs again with the same Idempotency-Key, to {name}, while the job runs",
        )
        if not again.headers.get("location", "").endswith(f"/jobs/{job_id}"):
            raise AssertionError(
                f"POST /jobs again with the same Idempotency-Key, to {name}: the Location "
                f"header is {again.headers.get('location')!r}, expected the first job's URL "
                f"(/jobs/{job_id})."
            )
    # A job sent after the repeats: the idle worker takes the queue's jobs in order, so it
    # begins this one only once it has begun any copy of the job that a repeat sent.
    fence = batch("#hold")
    service.accepted(fence)
    deadline = time.monotonic() + HANG
    while not service.started(fence):
        if len(service.started(texts)) > 1:
            raise AssertionError(
                f"POST /jobs sent the job again when the same Idempotency-Key came back: "
                f"while the first run of {texts[0]!r} was held, a worker began a second one. "
                "A repeat answers the first job and sends nothing."
            )
        if time.monotonic() > deadline:
            raise OutOfTime(
                f"No worker began the job of {fence[0]!r}, sent after the repeats, within "
                f"{HANG:g} s.{service.cluster.workers_said()}"
            )
        time.sleep(0.01)
    service.open_gate(texts)
    service.open_gate(fence)
    service.wait_for(job_id, {"succeeded", "failed"})
    # A third repeat, after the job has run: still the first answer, and no new run.
    expect_fields(
        expect_json(service.submit(texts, key), 202),
        {"id": job_id, "status": "queued"},
        "POST /jobs a third time with the same key, after the job ran",
    )
    expect_equal(service.calls(texts), 1, "the scorer's calls for the batch sent three times")
    # Another key, or none, is another request: a new job.
    other_key = service.accepted(texts, f"key-{uuid.uuid4()}")
    no_key = service.accepted(texts)
    expect_equal(
        len({job_id, other_key, no_key}),
        3,
        "the number of different job ids for the same batch with key A, key B and no key",
    )


def test_the_same_key_with_another_body_is_a_409(service):
    texts, key = batch(), f"key-{uuid.uuid4()}"
    job_id = service.accepted(texts, key)
    response = service.submit(batch(), key, via=service.other)
    body = expect_json(response, 409)
    if not isinstance(body, dict) or not isinstance(body.get("detail"), str):
        raise AssertionError(
            "POST /jobs with a used Idempotency-Key and another body answered 409, but "
            f'without FastAPI\'s {{"detail": "..."}} body: got {shown(body)}.'
        )
    expect_fields(
        expect_json(service.submit(texts, key), 202),
        {"id": job_id},
        "POST /jobs with the key and its own body, after the 409",
    )


def test_an_idempotency_key_over_128_characters_is_a_422(service):
    texts = batch()
    service.accepted(texts, "k" * KEY_LIMIT)
    for key in ["k" * (KEY_LIMIT + 1), ""]:
        expect_validation_error(service.submit(batch(), key), loc=["header", "Idempotency-Key"])


# --- Retries and dead ends ----------------------------------------------------------------


def test_a_transient_failure_is_retried_until_it_succeeds(service):
    texts = batch("#unavailable:2")
    job_id = service.accepted(texts)
    job, seen = service.wait_for(job_id, {"succeeded", "failed"})
    if job.get("status") == "failed":
        raise AssertionError(
            f"GET /jobs/{job_id}: the scorer raised ScorerUnavailable twice (it works on the "
            f"third call), and the job ended failed after {service.calls(texts)} call(s): "
            f"{shown(job)}. Retry the task when ScorerUnavailable is raised."
        )
    expect_equal(service.calls(texts), 3, "the scorer's calls (2 failures, then a success)")
    expect_fields(job, {"results": reference(texts), "error": None}, f"GET /jobs/{job_id}")
    if "failed" in seen:
        raise AssertionError(
            f'GET /jobs/{job_id} said "failed" while the job was waiting for a retry '
            f"(statuses seen: {seen}): Celery's RETRY is queued or running, never failed."
        )


def test_retries_stop_after_max_retries_and_the_job_fails(service):
    texts = batch("#unavailable:99")
    job_id = service.accepted(texts)
    job, _ = service.wait_for(job_id, {"succeeded", "failed"})
    expect_fields(job, {"status": "failed", "results": None}, f"GET /jobs/{job_id}")
    expect_equal(service.calls(texts), 4, "the scorer's calls (the first attempt and 3 retries)")
    if "the model server did not answer" not in str(job.get("error")):
        raise AssertionError(
            f"GET /jobs/{job_id}: expected the error to contain the last exception's message "
            f'"the model server did not answer", got {shown(job.get("error"))}.'
        )


def test_a_permanent_failure_ends_failed_with_its_error_and_is_not_retried(service):
    texts = batch("#reject")
    job_id = service.accepted(texts)
    job, _ = service.wait_for(job_id, {"succeeded", "failed"})
    expect_fields(job, {"status": "failed", "results": None}, f"GET /jobs/{job_id}")
    error = job.get("error")
    if not isinstance(error, str) or "the model refuses this batch" not in error:
        raise AssertionError(
            f'GET /jobs/{job_id}: expected "error" to contain the exception\'s message '
            f'"the model refuses this batch", got {shown(error)}.'
        )
    # A second job after it: if the first were retried, its calls would grow meanwhile.
    after = batch()
    service.wait_for(service.accepted(after), {"succeeded", "failed"})
    expect_equal(service.calls(texts), 1, "the scorer's calls for a batch it rejects")


# --- A worker that dies mid-job --------------------------------------------------------------


def test_a_job_whose_worker_is_killed_is_finished_by_another(
    fragile_cluster, monkeypatch, exercise
):
    for service in _service(fragile_cluster, monkeypatch, exercise):
        texts = batch("#hold")
        job_id = service.accepted(texts)
        victim = service.wait_started(texts)[0]
        workers = {process.pid: process for process in fragile_cluster.workers}
        if victim not in workers:
            raise AssertionError(
                f"The job ran in process {victim}, which is none of the workers "
                f"{sorted(workers)}: send it to the queue, never run it in the API process."
            )
        workers[victim].kill()  # SIGKILL: the worker cannot acknowledge or reject anything
        service.open_gate(texts)  # the next attempt will not be held
        job, _ = service.wait_for(
            job_id, {"succeeded", "failed"}, after=" (its first worker was killed mid-job)"
        )
        expect_fields(
            job,
            {"status": "succeeded", "results": reference(texts)},
            f"GET /jobs/{job_id}, after its worker was killed mid-job",
        )
        attempts = service.wait_started(texts, 2)
        if attempts[-1] == victim or attempts[-1] not in workers:
            raise AssertionError(
                f"The job's attempts ran in processes {attempts}: expected the second in the "
                "worker that was not killed."
            )


# --- Unknown ids and bounded input -------------------------------------------------------


def test_an_unknown_job_id_is_a_404(service):
    job_id = service.accepted(batch())
    expect_status(service.client.get(f"/jobs/{job_id}"), 200)
    for unknown in [uuid.uuid4().hex, "no-such-job"]:
        body = expect_json(service.client.get(f"/jobs/{unknown}"), 404)
        if not isinstance(body, dict) or not isinstance(body.get("detail"), str):
            raise AssertionError(
                f'GET /jobs/{unknown} answered 404, but without FastAPI\'s {{"detail": ...}} '
                f"body. Got {shown(body)}."
            )


def test_a_bad_batch_is_a_422(service):
    service.accepted(["x" * TEXT_LIMIT, *["a ticket"] * 99])
    cases = [
        ([], ["body", "texts"]),
        (["a ticket"] * 101, ["body", "texts"]),
        (["a ticket", "   "], ["body", "texts", 1]),
        (["x" * (TEXT_LIMIT + 1)], ["body", "texts", 0]),
    ]
    for texts, loc in cases:
        expect_validation_error(service.submit(texts), loc=loc)


def test_a_body_over_the_size_limit_is_a_413(service):
    def padded(size: int) -> bytes:
        data = b'{"texts": ["a ticket"]}'
        return data + b" " * (size - len(data))

    def streamed(data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), 256 * 1024):  # chunked: no Content-Length
            yield data[start : start + 256 * 1024]

    post = service.client.post
    expect_status(post("/jobs", content=padded(BODY_LIMIT), headers=JSON_HEADERS), 202)
    expect_status(post("/jobs", content=padded(BODY_LIMIT + 1), headers=JSON_HEADERS), 413)
    too_large = streamed(padded(BODY_LIMIT + 1))
    expect_status(post("/jobs", content=too_large, headers=JSON_HEADERS), 413)
