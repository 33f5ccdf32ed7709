"""Graded tests for step 15's service. Read them: they are the exact contract of the brief.

Run them with `pytest exercises/15_capstone`. Points and hints live in course.toml.

The tests start, once for all of them, a real Valkey server, your service under
`uvicorn app:app --workers 2` and a Celery worker (`celery -A tasks:celery_app worker`),
each a process of its own, and stop them at the end. They talk to it with the official
`openai` client (sync and async) and with raw HTTP. Every answer names the worker process
that served it (`X-Served-By`): to prove state is shared, a test opens connections until it
holds one served by each worker (a connection stays with the worker that accepted it) and
sends one part of a scenario through each. They find your service in the grader's
`graded_folder`, so an instructor's run grades them in a process your code does not
enter. What depends on a gate the test holds (the micro-batcher, readiness, telemetry)
runs your `create_app()` in this process instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2 as httpx
import openai
import pytest
from fastapi.testclient import TestClient

import coursekit.models
from autograder.expect import (
    Mismatch,
    OutOfTime,
    describe,
    expect_equal,
    expect_json,
    shown,
    shown_body,
)
from autograder.processes import WARM_SOCKET_ENV
from autograder.sse import parse_sse
from coursekit.llm import get_model, prompt_tokens
from coursekit.models import LoadedModel
from coursekit.redis_server import NO_SERVER, NoServerError, running_server
from coursekit.server import ThreadedServer, free_port

START_TIMEOUT = 240.0  # seconds for uvicorn's two workers to serve: a hang stop, not a judge
# (about 4 s idle; four gradings at once on a loaded 2-core machine took over 40 s, and the
# whole course graded beside 16 busy processes on 2 cores, load 20, over 150 s once)
READ_TIMEOUT = 10.0  # seconds for one answer (a correct one takes milliseconds)
JOB_TIMEOUT = 30.0  # seconds for a job to finish on the worker (it takes under one)
GATE_TIMEOUT = 10.0  # seconds a held model call waits for the test before it goes on
MAX_PINS = 64  # connections opened to find one per worker: 2^-63 to miss with even odds
MODEL = "coursekit-tinylm"
# Users of this run's own: with COURSE_REDIS_URL, one server outlives runs, and a count
# (carol's quota) must not carry over from the last run.
RUN = uuid.uuid4().hex[:8]
KEYS = {
    "key-alice": {"user": f"alice-{RUN}", "rate_limit": "100000/hour"},
    "key-bob": {"user": f"bob-{RUN}", "rate_limit": "100000/hour"},
    "key-carol": {"user": f"carol-{RUN}", "rate_limit": "6/hour"},  # the rate-limit test's
}
ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}
CAROL = {"Authorization": "Bearer key-carol"}
TICKETS = [
    "My card was charged for an order I returned a month ago.",
    "The tracking number you sent me does not exist.",
    "Every time I press save, the editor freezes.",
    "I changed my phone and cannot sign in any more.",
    "Why does my invoice list a delivery fee twice?",
    "The parcel was left with a neighbour I do not know.",
]

_reference = coursekit.models.load_model("tickets")


def reference(text: str) -> dict[str, Any]:
    """The ticket model's answer for `text` alone."""
    [row] = _reference.pipeline.predict_proba([text])
    return {"label": _reference.classes[int(row.argmax())], "confidence": float(row.max())}


def user_says(text: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}]}


def environment(redis_url: str) -> dict[str, str]:
    return {"CAPSTONE_REDIS_URL": redis_url, "CAPSTONE_API_KEYS": json.dumps(KEYS)}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    try:
        with running_server() as url:
            yield url
    except NoServerError as error:
        raise AssertionError(str(error) or NO_SERVER) from None


# --- The deployment: uvicorn with two workers, and a Celery worker ----------------------


@dataclass
class Deployment:
    base_url: str
    log: Path
    pins: list[httpx.Client] = field(default_factory=list)
    opened: list[httpx.Client] = field(default_factory=list)

    def http(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base_url, timeout=READ_TIMEOUT)
        self.opened.append(client)
        return client

    def both_workers(self) -> tuple[httpx.Client, httpx.Client]:
        """Two connections, each served by a different worker process (see the top)."""
        if not self.pins:
            seen: dict[str, httpx.Client] = {}
            for _ in range(MAX_PINS):
                client = self.http()
                live = client.get("/health/live")
                served_by = live.headers.get("x-served-by")
                if not served_by:
                    raise Mismatch(
                        "GET /health/live: the answer has no X-Served-By header. Every "
                        "answer names the worker process that served it (its process id).",
                        symptom="no X-Served-By",
                    )
                expect_equal(expect_json(live), {"status": "ok"}, "GET /health/live")
                seen.setdefault(served_by, client)
                if len(seen) == 2:
                    break
            if len(seen) < 2:
                raise AssertionError(
                    f"{MAX_PINS} connections were all served by the process "
                    f"{shown(next(iter(seen)))}: under `uvicorn --workers 2` two processes "
                    "serve, so X-Served-By must differ between them (use os.getpid())."
                )
            self.pins = list(seen.values())
        return self.pins[0], self.pins[1]

    def openai(self, key: str = "key-alice") -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key=key, max_retries=0, timeout=READ_TIMEOUT
        )

    def async_openai(self, key: str = "key-alice") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.base_url}/v1", api_key=key, max_retries=0, timeout=READ_TIMEOUT
        )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Ask all to stop at once (SIGTERM: uvicorn and Celery shut down gracefully), then wait."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " | ".join(lines[-6:]) or "(nothing)"


@pytest.fixture(scope="module")
def deployment(redis_url: str, graded_folder: Path) -> Iterator[Deployment]:
    if not (graded_folder / "app.py").is_file():
        raise AssertionError("There is no app.py to serve.")
    folder = str(graded_folder)
    port = free_port()
    env = {
        **os.environ,
        **environment(redis_url),
        "PYTHONPATH": os.pathsep.join([folder, *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    # Neither the grading child's job (where its results go) nor the warm process's socket.
    env.pop("AUTOGRADER_CHILD", None)
    env.pop(WARM_SOCKET_ENV, None)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="capstone-")))
        log = scratch / "uvicorn.log"
        processes: list[subprocess.Popen[bytes]] = []
        stack.callback(_stop, processes)
        uvicorn = ["uvicorn", "app:app", "--workers", "2", "--host", "127.0.0.1"]
        # Its info lines say when each worker has started (below); not one per request.
        uvicorn += ["--port", str(port), "--log-level", "info", "--no-access-log"]
        celery = ["celery", "-A", "tasks:celery_app", "worker", "--pool", "solo"]
        celery += ["--concurrency", "1", "--without-gossip", "--without-mingle"]
        celery += ["--without-heartbeat", "--loglevel", "warning", "-n", f"capstone-{port}@%h"]
        for command, name in ((uvicorn, "uvicorn.log"), (celery, "celery.log")):
            with open(scratch / name, "wb") as output:
                process = subprocess.Popen(
                    [sys.executable, "-m", *command],
                    cwd=folder,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            processes.append(process)
        running = Deployment(f"http://127.0.0.1:{port}", log)
        stack.callback(lambda: [client.close() for client in running.opened])
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if processes[0].poll() is not None:
                raise AssertionError(
                    f"`uvicorn app:app --workers 2` stopped before it served: {_tail(log)}"
                )
            try:
                httpx.get(f"{running.base_url}/health/live", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise OutOfTime(
                        f"`uvicorn app:app --workers 2` did not serve within "
                        f"{START_TIMEOUT:g} s: {_tail(log)}"
                    ) from None
                time.sleep(0.02)
        # One worker answering is not both: on a busy machine the second can still be
        # starting, and every connection would then go to the first. uvicorn says
        # "Application startup complete." once per worker.
        while log.read_text(errors="replace").count("Application startup complete.") < 2:
            if processes[0].poll() is not None or "startup failed" in log.read_text(
                errors="replace"
            ):
                break  # the tests say what they see of it
            if time.monotonic() > deadline:
                raise OutOfTime(
                    f"`uvicorn app:app --workers 2`: only one worker started within "
                    f"{START_TIMEOUT:g} s: {_tail(log)}"
                )
            time.sleep(0.02)
        yield running


def expect_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error body: `{"error": {"code", "message", "type", "param", "details"}}`."""
    body = expect_json(response, status)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or error.get("code") != code or not error.get("message"):
        raise Mismatch(
            f"{describe(response)}: expected the error body with code {shown(code)} and a "
            f"message; got {shown_body(response.text)}.",
            symptom=f"{status} without the error body",
        )
    for name in ("type", "param", "details"):
        if name not in error:
            raise Mismatch(
                f"{describe(response)}: the error body has no {shown(name)}; got "
                f"{shown_body(response.text)}.",
                symptom="the error body is incomplete",
            )
    return error


def expect_retry_after(response: httpx.Response, most: int) -> None:
    value = response.headers.get("retry-after", "")
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise Mismatch(
            f"{describe(response)}: expected a Retry-After header of whole seconds, 1 to "
            f"{most}; got {shown(value or None)}."
        )


# --- The OpenAI contract, through the official client ------------------------------------


@contextmanager
def through_openai(what: str) -> Iterator[None]:
    """An error status the client raises, told as what was asked and what came back."""
    try:
        yield
    except openai.APIStatusError as error:
        raise Mismatch(
            f"{what} with the official openai client: the service answered "
            f"{error.status_code} {shown_body(error.response.text)}.",
            symptom=f"{error.status_code} to the openai client",
        ) from None


def test_the_openai_client_lists_the_model(deployment: Deployment) -> None:
    with through_openai("GET /v1/models"):
        models = deployment.openai().models.list()
    expect_equal([model.id for model in models.data], [MODEL], "the ids of GET /v1/models")


def test_a_chat_completion_through_the_openai_client(deployment: Deployment) -> None:
    messages = [{"role": "user", "content": "How do I serve a model?"}]
    with through_openai("POST /v1/chat/completions"):
        completion = deployment.openai().chat.completions.create(
            model=MODEL, messages=messages, max_completion_tokens=8, seed=3
        )
    expected = get_model().reply(messages, max_tokens=8, seed=3)
    expect_equal(
        completion.choices[0].message.content,
        expected.message["content"],
        "the reply to one user message (max_completion_tokens=8, seed=3): TinyLM's own answer",
    )
    expect_equal(completion.choices[0].finish_reason, "length", "finish_reason")
    expect_equal(completion.usage.prompt_tokens, prompt_tokens(messages), "usage.prompt_tokens")
    # The older name of the limit, the default limit, temperature and stop, as raw HTTP.
    client = deployment.http()
    for options, limits in (
        ({"max_tokens": 5}, {"max_tokens": 5}),
        ({"max_completion_tokens": 4, "max_tokens": 9}, {"max_tokens": 4}),  # the newer wins
        ({}, {"max_tokens": 16}),
        (
            {"temperature": 0, "stop": [" notebook"], "seed": 1},
            {"temperature": 0, "stop": [" notebook"], "seed": 1, "max_tokens": 16},
        ),
    ):
        response = client.post(
            "/v1/chat/completions",
            headers=ALICE,
            json={"model": MODEL, "messages": messages, **options},
        )
        body = expect_json(response)
        expected = get_model().reply(messages, **limits)
        expect_equal(
            (body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]),
            (expected.message["content"], expected.finish_reason),
            f"the reply and finish_reason with {shown(options) if options else 'no limit'}",
        )


def test_a_stream_through_the_async_openai_client_ends_with_done(
    deployment: Deployment,
) -> None:
    import asyncio

    messages = [{"role": "user", "content": "Tell me about streaming."}]

    async def stream() -> list[Any]:
        client = deployment.async_openai()
        async with client:
            answer = await client.chat.completions.create(
                model=MODEL, messages=messages, max_completion_tokens=6, stream=True
            )
            return [chunk async for chunk in answer]

    with through_openai("POST /v1/chat/completions with stream=true"):
        chunks = asyncio.run(stream())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expected = get_model().reply(messages, max_tokens=6)
    expect_equal(text, expected.message["content"], "the streamed reply, its chunks joined")
    expect_equal(len({chunk.id for chunk in chunks}), 1, "how many ids the chunks carry")
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    if len(pieces) < 2:
        raise Mismatch(
            f"The streamed reply {shown(text)} came in {len(pieces)} content chunk(s): a "
            "stream sends the content in pieces as the model makes them (one chunk per "
            "piece of Completion.deltas()), not the whole reply at once.",
            symptom="the content in one chunk",
        )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    expect_equal(finishes[-1], "length", "the last choice's finish_reason")
    expect_equal(
        [finish for finish in finishes[:-1] if finish is not None],
        [],
        "the finish_reason of the chunks before the last (it comes in the last chunk only)",
    )
    # The client hides the end marker: read the same stream as raw HTTP too.
    raw = deployment.http().post(
        "/v1/chat/completions", headers=ALICE, json={**user_says("hi"), "stream": True}
    )
    events = parse_sse(raw.text)
    if raw.status_code != 200 or not events or events[-1]["data"] != "[DONE]":
        raise Mismatch(
            f"{describe(raw)}: expected a stream whose last event is `data: [DONE]`; got "
            f"{raw.status_code} {shown_body(raw.text)}."
        )


def test_the_model_calls_the_ticket_tool_on_the_server(deployment: Deployment) -> None:
    text = TICKETS[0]
    with through_openai("POST /v1/chat/completions"):
        completion = deployment.openai().chat.completions.create(
            model=MODEL, messages=completion_messages(text), max_completion_tokens=40
        )
    content = completion.choices[0].message.content or ""
    label = reference(text)["label"]
    if f'"label":"{label}"' not in content.replace(" ", ""):
        raise Mismatch(
            f"The user wrote 'classify_ticket {text}': TinyLM asks for that tool, the service "
            f"runs it and gives the model its result, and the model's answer quotes it. "
            f'Expected the answer to hold "label":"{label}"; got {shown(content)}.'
        )
    expect_equal(completion.choices[0].finish_reason, "length", "finish_reason")
    if completion.usage.completion_tokens <= 40:
        # The answer alone ran to the limit (finish_reason "length"): 40 tokens. The call
        # that asked for the tool made tokens too, so the request's sum is more than 40.
        raise Mismatch(
            "usage must add up every model call of the request: the answer ran to "
            "max_completion_tokens=40 and the call before it asked for the tool, so "
            f"usage.completion_tokens is more than 40; got {completion.usage.completion_tokens}"
            ", the last call's alone.",
            symptom="usage of the last model call only",
        )
    if completion.usage.prompt_tokens <= prompt_tokens(completion_messages(text)):
        raise Mismatch(
            "usage.prompt_tokens must add up every model call of the request (the call that "
            f"asked for the tool, then the one that read its result); got "
            f"{completion.usage.prompt_tokens}, no more than the first call alone."
        )


def completion_messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"classify_ticket {text}"}]


# --- Shared state across the two workers ---------------------------------------------------


def served_by(client: httpx.Client) -> str:
    return client.get("/health/live").headers.get("x-served-by", "")


def test_a_session_continues_through_the_other_worker(deployment: Deployment) -> None:
    first, second = deployment.both_workers()
    created = first.post("/v1/sessions", headers=ALICE)
    session_id = expect_json(created, 201).get("id")
    if not isinstance(session_id, str) or not session_id:
        raise Mismatch(f'{describe(created)}: expected {{"id": ...}}; got {created.text}.')
    session = {**ALICE, "X-Session-ID": session_id}
    turns = ["How do I serve a model?", "And how do I stream it?"]
    history: list[dict[str, Any]] = []
    for client, text in zip((first, second), turns, strict=True):
        message = {"role": "user", "content": text}
        response = client.post(
            "/v1/chat/completions", headers=session, json={"model": MODEL, "messages": [message]}
        )
        body = expect_json(response)
        history.append(message)
        expect_equal(
            body["usage"]["prompt_tokens"],
            prompt_tokens(history),
            f"usage.prompt_tokens of turn {len(history) // 2 + 1}, through worker "
            f"{response.headers.get('x-served-by')}: the model must get the session's stored "
            "messages, then the new one",
        )
        history.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})
    for client in (first, second):
        stored = expect_json(client.get(f"/v1/sessions/{session_id}", headers=ALICE))
        expect_equal(
            stored.get("messages"),
            history,
            f"GET /v1/sessions/{{id}} through worker {served_by(client)}: the two turns, "
            "each user message then the reply, oldest first",
        )


def test_another_users_session_is_a_404(deployment: Deployment) -> None:
    client = deployment.http()
    session_id = expect_json(client.post("/v1/sessions", headers=ALICE), 201)["id"]
    expect_json(client.get(f"/v1/sessions/{session_id}", headers=ALICE))
    expect_error(client.get(f"/v1/sessions/{session_id}", headers=BOB), 404, "session_not_found")
    response = client.post(
        "/v1/chat/completions", headers={**BOB, "X-Session-ID": session_id}, json=user_says("hi")
    )
    expect_error(response, 404, "session_not_found")
    expect_error(
        client.get("/v1/sessions/no-such-session", headers=ALICE), 404, "session_not_found"
    )
    unknown = client.post(
        "/v1/chat/completions",
        headers={**ALICE, "X-Session-ID": "no-such-session"},
        json=user_says("hi"),
    )
    expect_error(unknown, 404, "session_not_found")


def test_the_rate_limit_holds_across_both_workers(deployment: Deployment) -> None:
    first, second = deployment.both_workers()
    # carol may make 6 requests an hour: 3 through each worker, to every kind of /v1/
    # route, then none through either.
    expect_json(first.get("/v1/models", headers=CAROL))
    session_id = expect_json(second.post("/v1/sessions", headers=CAROL), 201)["id"]
    ticket = {"text": TICKETS[0]}
    expect_json(first.post("/v1/tickets/predict", headers=CAROL, json=ticket))
    job_id = expect_json(second.post("/v1/jobs", headers=CAROL, json={"texts": TICKETS[:1]}), 202)
    expect_json(first.get(f"/v1/jobs/{job_id['id']}", headers=CAROL))
    expect_json(second.get(f"/v1/sessions/{session_id}", headers=CAROL))
    for client, method, path, body in (
        (first, "POST", "/v1/jobs", {"texts": TICKETS[:1]}),
        (second, "GET", "/v1/models", None),
    ):
        response = client.request(method, path, headers=CAROL, json=body)
        if response.status_code in {200, 202}:
            raise Mismatch(
                f"{describe(response)} through worker {response.headers.get('x-served-by')}: "
                "carol's key allows 6 requests an hour and made 6, 3 through each worker "
                "(GET /v1/models, POST /v1/sessions, POST /v1/tickets/predict, POST "
                "/v1/jobs, GET /v1/jobs/{id}, GET /v1/sessions/{id}); the 7th got "
                f"{response.status_code}. Either the limit is counted in each process "
                "instead of in the Valkey server the workers share, or a route does not "
                "count against it.",
                symptom="the rate limit is per process, or a route is not counted",
            )
        expect_error(response, 429, "rate_limited")
        expect_retry_after(response, 3600)
    expect_json(first.get("/v1/models", headers=ALICE))  # each key has its own limit


# --- Jobs on the queue -----------------------------------------------------------------------


def poll(client: httpx.Client, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        body = expect_json(client.get(f"/v1/jobs/{job_id}", headers=headers))
        if body.get("status") in {"succeeded", "failed"}:
            return body
        if body.get("status") not in {"queued", "running"}:
            raise Mismatch(f"GET /v1/jobs/{job_id}: status {shown(body.get('status'))}.")
        if time.monotonic() > deadline:
            raise OutOfTime(
                f"Job {job_id} was still {body['status']!r} after {JOB_TIMEOUT:g} s: does "
                "the Celery worker (`celery -A tasks:celery_app worker`) know the task?"
            )
        time.sleep(0.05)


def test_a_job_runs_on_the_queue_and_is_read_through_the_other_worker(
    deployment: Deployment,
) -> None:
    first, second = deployment.both_workers()
    submitted = first.post("/v1/jobs", headers=ALICE, json={"texts": TICKETS})
    body = expect_json(submitted, 202)
    if body.get("status") not in {"queued", "running", "succeeded"} or not body.get("id"):
        raise Mismatch(f"{describe(submitted)}: expected a job id and its status; got {body}.")
    done = poll(second, body["id"], ALICE)
    expect_equal(done.get("status"), "succeeded", "the job's status once it is done")
    expect_equal(
        done.get("result"), [reference(text) for text in TICKETS], "the job's result, in order"
    )
    expect_error(second.get(f"/v1/jobs/{body['id']}", headers=BOB), 404, "job_not_found")
    expect_error(second.get("/v1/jobs/no-such-job", headers=ALICE), 404, "job_not_found")


def test_an_idempotency_key_gives_the_same_job_through_either_worker(
    deployment: Deployment,
) -> None:
    first, second = deployment.both_workers()
    key = f"order-{time.time_ns()}"
    job = {"texts": TICKETS[:2]}
    ids = [
        expect_json(
            client.post("/v1/jobs", headers={**ALICE, "Idempotency-Key": key}, json=job), 202
        ).get("id")
        for client in (first, second, first)
    ]
    expect_equal(
        len(set(ids)), 1, f"how many jobs three POST /v1/jobs with Idempotency-Key {key!r} made"
    )
    other = expect_json(
        second.post("/v1/jobs", headers={**ALICE, "Idempotency-Key": key + "-2"}, json=job), 202
    )
    if other.get("id") == ids[0]:
        raise Mismatch("Another Idempotency-Key must make another job; it got the same id.")
    bobs = second.post("/v1/jobs", headers={**BOB, "Idempotency-Key": key}, json=job)
    if expect_json(bobs, 202).get("id") in ids:
        raise Mismatch(
            f"{describe(bobs)}: bob sent the Idempotency-Key {key!r} that alice had used; "
            "a key repeats a job of the same user only, so bob must get a job of his own, "
            "not alice's.",
            symptom="an idempotency key shared by all users",
        )
    expect_equal(poll(second, ids[0], ALICE).get("status"), "succeeded", "the job's status")


# --- Keys, ids, bad input ---------------------------------------------------------------------


def test_every_v1_route_wants_a_key(deployment: Deployment) -> None:
    client = deployment.http()
    expect_json(client.get("/v1/models", headers=ALICE))
    requests = [
        ("GET", "/v1/models", None),
        ("POST", "/v1/chat/completions", user_says("hi")),
        ("POST", "/v1/sessions", None),
        ("POST", "/v1/tickets/predict", {"text": TICKETS[0]}),
        ("POST", "/v1/jobs", {"texts": TICKETS[:1]}),
    ]
    for method, path, body in requests:
        for headers in ({}, {"Authorization": "Bearer not-a-key"}):
            response = client.request(method, path, headers=headers, json=body)
            error = expect_error(response, 401, "invalid_api_key")
            expect_equal(error.get("type"), "authentication_error", f"{method} {path}: error.type")
    with pytest.raises(openai.AuthenticationError):
        deployment.openai("not-a-key").models.list()


def test_request_ids_and_the_serving_process(deployment: Deployment) -> None:
    client = deployment.http()
    for path, headers in (("/v1/models", ALICE), ("/no-such-path", ALICE), ("/v1/models", {})):
        response = client.get(path, headers={**headers, "X-Request-ID": "trace-42.a_b"})
        expect_equal(
            response.headers.get("x-request-id"), "trace-42.a_b", f"GET {path}: X-Request-ID"
        )
        if not response.headers.get("x-served-by", "").isdigit():
            raise Mismatch(
                f"GET {path}: expected X-Served-By, a process id; got {dict(response.headers)}."
            )
    made = set()
    for bad in ("", "a" * 65, "no spaces", None):
        sent = {} if bad is None else {"X-Request-ID": bad}
        made.add(
            client.get("/v1/models", headers={**ALICE, **sent}).headers.get("x-request-id", "")
        )
    if len(made) != 4 or any(len(value) == 0 or len(value) > 64 for value in made):
        raise Mismatch(
            "A missing or invalid X-Request-ID (empty, 65 characters, a space) must be "
            "replaced by a new id of 1 to 64 characters, a different one each time; got "
            f"{sorted(made)}."
        )


def test_bad_input_gets_the_error_body_never_a_500(deployment: Deployment) -> None:
    client = deployment.http()
    expect_json(client.post("/v1/tickets/predict", headers=ALICE, json={"text": TICKETS[0]}))
    cases: list[tuple[str, Any, int, str]] = [
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, 422, "validation_error"),
        ("/v1/chat/completions", {"model": MODEL}, 422, "validation_error"),
        ("/v1/chat/completions", user_says("x" * 8001), 422, "validation_error"),
        (
            "/v1/chat/completions",
            {**user_says("hi"), "max_completion_tokens": 513},
            422,
            "validation_error",
        ),
        ("/v1/chat/completions", {**user_says("hi"), "model": "gpt-9"}, 404, "model_not_found"),
        ("/v1/tickets/predict", {"text": "   "}, 422, "validation_error"),
        ("/v1/tickets/predict", {"text": "x" * 2001}, 422, "validation_error"),
        ("/v1/jobs", {"texts": []}, 422, "validation_error"),
        ("/v1/jobs", {"texts": ["a ticket"] * 65}, 422, "validation_error"),
        ("/v1/jobs", {"texts": [""]}, 422, "validation_error"),
    ]
    for path, body, status, code in cases:
        expect_error(client.post(path, headers=ALICE, json=body), status, code)
    not_json = client.post(
        "/v1/tickets/predict", headers={**ALICE, "Content-Type": "application/json"}, content=b"{"
    )
    expect_error(not_json, 422, "validation_error")

    def chunked() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    too_big = client.post(
        "/v1/tickets/predict",
        headers={**ALICE, "Content-Type": "application/json"},
        content=chunked(),
    )
    expect_error(too_big, 413, "content_too_large")
    expect_error(client.get("/no-such-path", headers=ALICE), 404, "not_found")
    session_id = expect_json(client.post("/v1/sessions", headers=ALICE), 201)["id"]
    session = {**ALICE, "X-Session-ID": session_id}
    for turn in range(1, 16):  # 15 turns of two messages (one sent, the reply) store 30
        expect_json(client.post("/v1/chat/completions", headers=session, json=user_says(f"{turn}")))
    two = {"model": MODEL, "messages": [{"role": "user", "content": w} for w in ("a", "b")]}
    # Two messages and the reply would store 33, past MAX_SESSION_MESSAGES (32): refused,
    # and nothing stored, so one message and its reply (32) still fit, and then no more.
    expect_error(
        client.post("/v1/chat/completions", headers=session, json=two), 409, "session_full"
    )
    expect_json(client.post("/v1/chat/completions", headers=session, json=user_says("16")))
    expect_error(
        client.post("/v1/chat/completions", headers=session, json=user_says("17")),
        409,
        "session_full",
    )
    too_many = client.post(
        "/v1/jobs", headers={**ALICE, "Idempotency-Key": "k" * 129}, json={"texts": ["a"]}
    )
    expect_error(too_many, 422, "validation_error")


# --- In this process: readiness, micro-batching, telemetry ------------------------------------


@contextmanager
def service_here(
    redis: str, monkeypatch: pytest.MonkeyPatch, exercise: Callable[[str], Any], **kwargs: Any
) -> Iterator[Any]:
    for name, value in environment(redis).items():
        monkeypatch.setenv(name, value)
    yield exercise("app").create_app(**kwargs)


@contextmanager
def one_process(app_server: Any, redis: str) -> Iterator[httpx.Client]:
    """Your app under one uvicorn process of its own (the grader's `app_server`),
    configured as the deployment is but with `redis` for its Valkey server, and a client."""
    with (
        app_server(environment(redis)) as base_url,
        httpx.Client(base_url=base_url, timeout=READ_TIMEOUT) as client,
    ):
        yield client


def test_ready_is_503_while_the_valkey_server_does_not_answer(
    redis_url: str, app_server: Any
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # a port nothing listens on
    with one_process(app_server, nobody) as client:
        expect_json(client.get("/health/live"))
        response = client.get("/health/ready")
        expect_equal(
            (response.status_code, response.json()),
            (503, {"status": "unavailable"}),
            f"GET /health/ready while no Valkey server answers at {nobody}",
        )
    with one_process(app_server, redis_url) as client:
        expect_equal(
            expect_json(client.get("/health/ready")),
            {"status": "ok"},
            "GET /health/ready once the Valkey server answers",
        )


def another_database(redis_url: str) -> str:
    """The same server, another database: one that the deployment's Celery worker does not read."""
    parts = urlsplit(redis_url)
    number = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(number + 1) % 16}"))


def test_a_job_waits_for_a_worker_on_the_queue(redis_url: str, app_server: Any) -> None:
    # No Celery worker reads this database: a job put on the queue stays queued.
    quiet = another_database(redis_url)
    with one_process(app_server, quiet) as client:
        submitted = client.post("/v1/jobs", headers=ALICE, json={"texts": TICKETS[:2]})
        job_id = expect_json(submitted, 202).get("id")
        read = expect_json(client.get(f"/v1/jobs/{job_id}", headers=ALICE))
    if read.get("status") != "queued":
        raise Mismatch(
            f"POST /v1/jobs, then GET /v1/jobs/{job_id}, with no Celery worker running: "
            f"expected the job still 'queued'; got {shown(read.get('status'))}. A job is run "
            "by a worker process (`celery -A tasks:celery_app worker`), not in the API "
            "process (no task_always_eager, no BackgroundTasks).",
            symptom="the job runs in the API process",
        )


class GatedTickets:
    """The real ticket model; its first call is held at a gate and every call recorded."""

    def __init__(self) -> None:
        self.real_load = coursekit.models.load_model
        self.loaded = self.real_load("tickets")
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.called = threading.Event()
        original = self.loaded.pipeline.predict_proba

        def predict_proba(inputs: Any, *args: Any, **kwargs: Any) -> Any:
            self.sizes.append(len(inputs))
            self.called.set()
            self.gate.wait(GATE_TIMEOUT)
            return original(inputs, *args, **kwargs)

        self.loaded.pipeline.predict_proba = predict_proba  # type: ignore[method-assign]

    def load_model(self, name: str, directory: Any = None) -> LoadedModel:
        return self.loaded if name == "tickets" else self.real_load(name, directory)

    def wait_held(self, first: Future[httpx.Response]) -> None:
        """Wait until the `first` prediction's model call is held at the gate."""
        deadline = time.monotonic() + READ_TIMEOUT
        while not self.called.wait(0.01) and not first.done():  # a failed request: at once
            if time.monotonic() > deadline:
                raise OutOfTime("POST /v1/tickets/predict did not call the ticket model in time.")
        if not self.called.is_set():
            raise AssertionError(
                f"POST /v1/tickets/predict never called the ticket model: {first.result().text}"
            )


def test_concurrent_predictions_share_model_calls(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, exercise: Callable[[str], Any]
) -> None:
    model = GatedTickets()
    monkeypatch.setattr(coursekit.models, "load_model", model.load_model)
    monkeypatch.setenv("CAPSTONE_BATCH_SIZE", "4")
    with ExitStack() as stack:
        app = stack.enter_context(service_here(redis_url, monkeypatch, exercise))
        server = ThreadedServer(app, timeout_graceful_shutdown=2)
        stack.callback(server.stop)
        stack.callback(model.gate.set)
        http = stack.enter_context(httpx.Client(base_url=server.start(), timeout=READ_TIMEOUT))
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=8))

        def predict(text: str) -> httpx.Response:
            return http.post("/v1/tickets/predict", headers=ALICE, json={"text": text})

        first = pool.submit(predict, TICKETS[0])
        model.wait_held(first)
        rest: list[Future[httpx.Response]] = [pool.submit(predict, text) for text in TICKETS[1:]]
        batcher = getattr(app.state, "batcher", None)
        deadline = time.monotonic() + READ_TIMEOUT
        while getattr(batcher, "queued", None) != len(rest):
            if time.monotonic() > deadline:
                raise OutOfTime(
                    f"While the model was held on the first ticket, {len(rest)} more were sent; "
                    f"app.state.batcher.queued was {shown(getattr(batcher, 'queued', None))}, "
                    f"not {len(rest)}: the brief asks for the batcher there, with a `queued` count."
                )
            time.sleep(0.005)
        model.gate.set()
        for text, future in zip(TICKETS, [first, *rest], strict=True):
            expect_equal(expect_json(future.result()), reference(text), f"the answer to {text!r}")
    expect_equal(
        model.sizes,
        [1, 4, 1],
        "the rows of each model call: the first ticket alone, then the 5 that waited, "
        "in batches of at most CAPSTONE_BATCH_SIZE=4",
    )


QUEUE_BATCHES = 4  # the brief: at most 4 x batch_size tickets wait for a batch


def test_a_full_queue_is_a_503_with_retry_after(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, exercise: Callable[[str], Any]
) -> None:
    model = GatedTickets()
    monkeypatch.setattr(coursekit.models, "load_model", model.load_model)
    monkeypatch.setenv("CAPSTONE_BATCH_SIZE", "2")
    bound = QUEUE_BATCHES * 2
    texts = [TICKETS[i % len(TICKETS)] for i in range(bound + 1)]  # one held, `bound` wait
    with ExitStack() as stack:
        app = stack.enter_context(service_here(redis_url, monkeypatch, exercise))
        server = ThreadedServer(app, timeout_graceful_shutdown=2)
        stack.callback(server.stop)
        stack.callback(model.gate.set)
        http = stack.enter_context(httpx.Client(base_url=server.start(), timeout=READ_TIMEOUT))
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=bound + 2))

        def predict(text: str) -> httpx.Response:
            return http.post("/v1/tickets/predict", headers=ALICE, json={"text": text})

        first = pool.submit(predict, texts[0])
        model.wait_held(first)
        waiting = [pool.submit(predict, text) for text in texts[1:]]
        batcher = getattr(app.state, "batcher", None)
        deadline = time.monotonic() + READ_TIMEOUT
        while getattr(batcher, "queued", None) != bound:
            if any(future.done() for future in waiting):
                done = next(future for future in waiting if future.done())
                raise Mismatch(
                    f"While the model was held on the first ticket, {bound} more were sent "
                    f"(CAPSTONE_BATCH_SIZE=2: up to {QUEUE_BATCHES} x 2 = {bound} may wait); "
                    f"one was answered before the model was free: {done.result().status_code} "
                    f"{shown_body(done.result().text)}.",
                    symptom="the queue refused a ticket it had room for",
                )
            if time.monotonic() > deadline:
                raise OutOfTime(
                    f"While the model was held on the first ticket, {bound} more were sent; "
                    f"app.state.batcher.queued was {shown(getattr(batcher, 'queued', None))}, "
                    f"not {bound}."
                )
            time.sleep(0.005)
        # One past the bound, while the model is still held: answered at once, or queued.
        past = pool.submit(predict, TICKETS[0])
        deadline = time.monotonic() + READ_TIMEOUT
        while not past.done():
            if (getattr(batcher, "queued", 0) or 0) > bound:
                raise Mismatch(
                    f"With the model held and {bound} tickets waiting ({QUEUE_BATCHES} x "
                    f"CAPSTONE_BATCH_SIZE=2), one more POST /v1/tickets/predict was queued "
                    f"too (queued: {batcher.queued}): a full queue answers 503 (overloaded) "
                    "at once, with Retry-After.",
                    symptom="the queue has no bound",
                )
            if time.monotonic() > deadline:
                raise OutOfTime(
                    f"With {bound} tickets waiting, one more POST /v1/tickets/predict was "
                    f"neither answered nor queued within {READ_TIMEOUT:g} s."
                )
            time.sleep(0.005)
        refused = past.result()
        if refused.status_code != 503:
            raise Mismatch(
                f"{describe(refused)}, with the model held and {bound} tickets waiting "
                f"({QUEUE_BATCHES} x CAPSTONE_BATCH_SIZE=2): expected 503 (overloaded) at "
                f"once; got {refused.status_code} {shown_body(refused.text)}.",
                symptom="a full queue is not a 503",
            )
        expect_error(refused, 503, "overloaded")
        expect_retry_after(refused, 60)
        model.gate.set()
        for text, future in zip(texts, [first, *waiting], strict=True):
            expect_equal(expect_json(future.result()), reference(text), f"the answer to {text!r}")


def test_telemetry_records_the_routes_and_leaves_out_the_probes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, exercise: Callable[[str], Any]
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(spans))
    providers = {
        "meter_provider": MeterProvider(metric_readers=[reader]),
        "tracer_provider": tracer,
    }
    with (
        service_here(redis_url, monkeypatch, exercise, **providers) as app,
        TestClient(app) as client,
    ):
        expect_json(client.get("/health/live"))
        expect_json(client.get("/health/ready"))
        expect_json(client.post("/v1/tickets/predict", headers=ALICE, json={"text": TICKETS[0]}))
        expect_json(client.get("/v1/models", headers=ALICE))
    routes = set()
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "http.server.request.duration":
                    routes |= {
                        point.attributes.get("http.route") for point in metric.data.data_points
                    }
    expect_equal(
        sorted(str(route) for route in routes),
        ["/v1/models", "/v1/tickets/predict"],
        "the http.route of the http.server.request.duration points (the probes left out)",
    )
    names = sorted({span.name for span in spans.get_finished_spans() if span.parent is None})
    if "POST /v1/tickets/predict" not in names or any("/health/" in name for name in names):
        raise Mismatch(
            f"Expected a span 'POST /v1/tickets/predict' and none for the probes; got {names}."
        )
