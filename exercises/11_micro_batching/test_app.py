"""Graded tests for step 11. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/11_micro_batching`. Points and hints live in course.toml.

Every test swaps the model your lifespan loads (`load_model("tickets")`) for the real
ticket model with an instrumented `predict_proba`: it records how many rows each call
gets, can hold its first call at a gate until the test opens it, and can fail on a
marked text. While the first batch is held, the test sends more requests and waits until
your batcher's `queued` count shows them all waiting; then it opens the gate. So the
batches your batcher forms are decided by the test's gate, never by a stopwatch. The
tests that send requests at the same time run your app under a real uvicorn server; the
others use `TestClient`. Some tests call your `MicroBatcher` directly, with a plain
function as the model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

import coursekit.models
from autograder.expect import (
    OutOfTime,
    expect_equal,
    expect_exact_keys,
    expect_json,
    expect_status,
)
from coursekit.models import LoadedModel
from coursekit.server import ThreadedServer

GATE_TIMEOUT = 10.0  # seconds the held model call waits for the test before it goes on
READ_TIMEOUT = 10.0  # seconds the test waits for an answer (a correct one takes far less)
PROBE_TIMEOUT = 5.0  # seconds the test waits while it holds the model (gate still closed)
POISON = "EXPLODE"  # a ticket holding this word makes the instrumented model raise

# Distinct tickets: each one's prediction (label and confidence) is its own.
TICKETS = [
    "I was charged twice for my subscription this month.",
    "My parcel has not arrived and the tracking page is empty.",
    "The app crashes every time I open the settings screen.",
    "I cannot log in: the password reset email never comes.",
    "Please refund the order I cancelled last week.",
    "The courier left the box at the wrong address.",
    "After the update the export button does nothing.",
    "How do I change the email address on my account?",
    "My invoice shows a fee I never agreed to.",
    "The package arrived damaged, the corner is crushed.",
    "Sync fails with error 500 on the desktop client.",
    "I want to close my account and delete my data.",
    "Why was my card declined when the balance is fine?",
    "Delivery was promised for Monday, it is now Friday.",
    "The web page freezes when I upload a large file.",
    "Two-factor codes stopped working on my new phone.",
    "I was billed in dollars but I live in Germany.",
    "Can I pick up my order at the depot instead?",
    "Notifications arrive hours late on Android.",
    "Someone changed my profile name without my consent.",
]

_reference = coursekit.models.load_model("tickets")  # an unbatched copy of the real model


def reference(text: str) -> dict[str, Any]:
    """The prediction for `text` alone: what the route must answer, batched or not."""
    [row] = _reference.pipeline.predict_proba([text])
    return {"label": _reference.classes[int(row.argmax())], "confidence": float(row.max())}


class InstrumentedModel:
    """The real ticket model; its predict_proba records, can be held, and can fail."""

    def __init__(self, *, gated: bool = False) -> None:
        self.loaded: LoadedModel = coursekit.models.load_model("tickets")
        self.sizes: list[int] = []  # rows per call, in call order
        self.gate = threading.Event()  # a closed gate holds every call until it opens
        if not gated:
            self.gate.set()
        self._called = threading.Condition()
        original = self.loaded.pipeline.predict_proba

        def predict_proba(inputs: Any, *args: Any, **kwargs: Any) -> Any:
            with self._called:
                self.sizes.append(len(inputs))
                self._called.notify_all()
            self.gate.wait(GATE_TIMEOUT)
            if any(POISON in str(text) for text in inputs):
                raise RuntimeError("the instrumented model failed on purpose")
            return original(inputs, *args, **kwargs)

        # On this instance only, as coursekit.models.record_batches does.
        self.loaded.pipeline.predict_proba = predict_proba  # type: ignore[method-assign]

    def load_model(self, name: str, directory: Any = None) -> LoadedModel:
        if name != "tickets":
            raise ValueError(f"this service serves the tickets model, not {name!r}")
        return self.loaded

    def wait_for_calls(self, count: int, timeout: float = PROBE_TIMEOUT) -> bool:
        with self._called:
            return self._called.wait_for(lambda: len(self.sizes) >= count, timeout)


@dataclass
class Running:
    """Your app, started with an instrumented model, and the means to talk to it."""

    app: Any
    model: InstrumentedModel
    http: Any  # an httpx2.Client on the live server, or a TestClient
    pool: ThreadPoolExecutor

    def post(self, text: str) -> httpx.Response:
        try:
            return self.http.post("/tickets/predict", json={"text": text})
        except httpx.TimeoutException:
            raise AssertionError(
                f'POST /tickets/predict with body {{"text": "{text}"}} got no answer within '
                f"{READ_TIMEOUT:g} s. Is the batching task running, and does every batch "
                "end with a result or an exception for each of its futures?"
            ) from None

    def send(self, text: str) -> Future[httpx.Response]:
        """POST in the background: the test goes on while the request waits."""
        return self.pool.submit(self.post, text)

    def batcher(self) -> Any:
        batcher = getattr(self.app.state, "batcher", None)
        if batcher is None:
            raise AssertionError(
                "app.state.batcher is not set: the lifespan must keep its MicroBatcher there."
            )
        return batcher

    def wait_until_queued(self, count: int, what: str) -> None:
        """Wait until `count` requests wait in the batcher's queue (the model is held)."""
        batcher = self.batcher()
        deadline = time.monotonic() + PROBE_TIMEOUT
        while batcher.queued < count:
            if time.monotonic() > deadline:
                raise OutOfTime(
                    f"While the model worked on the first batch, the test sent {what}, but "
                    f"the batcher's `queued` says {batcher.queued} of them wait, after "
                    f"{PROBE_TIMEOUT:g} s. The route must only put its ticket on the queue "
                    "and await its future, and the model must run in a worker thread "
                    "(asyncio.to_thread), so the event loop stays free to take requests."
                )
            time.sleep(0.005)

    def hold_first_batch(self) -> Future[httpx.Response]:
        """Send TICKETS[0] and wait until the model is working on it (held at the gate)."""
        first = self.send(TICKETS[0])
        if not self.model.wait_for_calls(1):
            raise OutOfTime(
                f"One POST /tickets/predict: the model was not called within {PROBE_TIMEOUT:g}"
                " s. A lone request must not wait for a full batch."
            )
        return first


Start = Callable[..., Running]


@pytest.fixture
def start(monkeypatch: pytest.MonkeyPatch, exercise: Callable[[str], Any]) -> Iterator[Start]:
    """Set the BATCHER_* variables, import app.py afresh with an instrumented model, start it."""
    stack = ExitStack()

    def starting(
        *,
        gated: bool = False,
        live: bool = True,
        max_batch_size: int = 8,
        max_wait: float = 0.01,
        max_queue: int = 64,
    ) -> Running:
        monkeypatch.setenv("BATCHER_MAX_BATCH_SIZE", str(max_batch_size))
        monkeypatch.setenv("BATCHER_MAX_WAIT", str(max_wait))
        monkeypatch.setenv("BATCHER_MAX_QUEUE", str(max_queue))
        module = exercise("app")
        model = InstrumentedModel(gated=gated)
        monkeypatch.setattr(module, "load_model", model.load_model)
        monkeypatch.setattr(coursekit.models, "load_model", model.load_model)
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=len(TICKETS) + 2))
        if live:
            server = ThreadedServer(module.app, timeout_graceful_shutdown=1)
            try:
                base_url = server.start()
            except RuntimeError:
                # uvicorn only logs why start-up failed; running the lifespan here raises it.
                with TestClient(module.app):
                    pass
                raise AssertionError(
                    "Your app did not start under uvicorn; check lifespan()."
                ) from None
            # Asked to stop, not waited for: its shutdown overlaps the next test (each test
            # has its own app, model and port), which saves a graceful shutdown per test.
            stack.callback(server.stop, wait=False)
            http = stack.enter_context(httpx.Client(base_url=base_url, timeout=READ_TIMEOUT))
        else:
            http = stack.enter_context(TestClient(module.app))
        # Runs first at the end: a held model call must not keep the server from stopping.
        stack.callback(model.gate.set)
        return Running(module.app, model, http, pool)

    with stack:
        yield starting


def prediction(response: httpx.Response, text: str) -> dict[str, Any]:
    """The two documented fields of a 200 answer, checked against the unbatched model."""
    body = expect_json(response)
    expect_exact_keys(body, ["label", "confidence"], "the POST /tickets/predict answer")
    return body


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


# --- One request ------------------------------------------------------------------------


def test_a_prediction_is_the_models_answer(start: Start) -> None:
    running = start(live=False)
    body = prediction(running.post(TICKETS[0]), TICKETS[0])
    expect_equal(body, reference(TICKETS[0]), f"the prediction for {TICKETS[0]!r}")
    expect_equal(running.model.sizes, [1], "the rows of each model call")


def test_a_lone_request_is_answered_without_a_full_batch(start: Start) -> None:
    # max_batch_size 64 and max_wait 0.02 s: a batcher that waits for 64 requests never
    # answers; one that waits at most max_wait answers within a fraction of a second.
    running = start(max_batch_size=64, max_wait=0.02)
    for text in TICKETS[:2]:
        body = prediction(running.post(text), text)
        expect_equal(body, reference(text), f"the prediction for {text!r}")
    expect_equal(
        running.model.sizes,
        [1, 1],
        "the rows of each model call for two requests sent one after the other",
    )


# --- Many requests at once ----------------------------------------------------------------


def test_concurrent_requests_share_model_calls(start: Start) -> None:
    running = start(gated=True, max_batch_size=8)
    first = running.hold_first_batch()
    rest = [running.send(text) for text in TICKETS[1:]]
    running.wait_until_queued(len(rest), f"{len(rest)} more requests")
    running.model.gate.set()
    for response in [first.result(), *(future.result() for future in rest)]:
        expect_status(response, 200)
    sizes = running.model.sizes
    if sizes != [1, 8, 8, 3]:
        raise AssertionError(
            f"20 requests: the first one alone, then 19 that waited in the queue while the "
            f"model worked on it, with BATCHER_MAX_BATCH_SIZE=8. Expected model calls of "
            f"[1, 8, 8, 3] rows; got {sizes}. Take every request already queued, up to "
            "max_batch_size, into one batch, never more."
        )


def test_every_answer_is_the_prediction_for_its_own_ticket(start: Start) -> None:
    running = start(gated=True, max_batch_size=8)
    first = running.hold_first_batch()
    rest = {text: running.send(text) for text in TICKETS[1:]}
    running.wait_until_queued(len(rest), f"{len(rest)} more requests")
    running.model.gate.set()
    answers = {TICKETS[0]: first.result(), **{t: f.result() for t, f in rest.items()}}
    for text, response in answers.items():
        body = prediction(response, text)
        expect_equal(
            body,
            reference(text),
            f"the answer to {text!r}, served in a batch (it must be that ticket's own "
            "prediction: give each future the result at its own position)",
        )


def test_the_model_runs_off_the_event_loop(start: Start) -> None:
    running = start(gated=True)
    running.hold_first_batch()
    # The model is held; a request the route refuses needs only the event loop.
    probe = running.pool.submit(running.http.post, "/tickets/predict", json={"text": ""})
    try:
        response = probe.result(timeout=PROBE_TIMEOUT)
    except TimeoutError:
        raise AssertionError(
            "While the model worked on a batch, the server answered nothing else (a POST "
            f"with an empty text got no 422 within {PROBE_TIMEOUT:g} s): the model call "
            "blocks the event loop. Run it in a worker thread with asyncio.to_thread."
        ) from None
    expect_error(response, 422, "validation_error")


# --- When the model fails -----------------------------------------------------------------


def test_a_model_error_fails_its_whole_batch_with_a_500(start: Start) -> None:
    running = start(gated=True)
    first = running.hold_first_batch()
    batch = [TICKETS[1], f"{POISON} {TICKETS[2]}", TICKETS[3]]
    pending = [running.send(text) for text in batch]
    running.wait_until_queued(3, "3 more requests (one that makes the model raise)")
    running.model.gate.set()
    prediction(first.result(), TICKETS[0])  # its batch did not hold the bad ticket
    for text, future in zip(batch, pending, strict=True):
        response = future.result()
        try:
            expect_error(response, 500, "prediction_failed")
        except AssertionError as error:
            raise AssertionError(
                f"The model raised on a batch of {batch}. The request {text!r} of that "
                f"batch: {error}"
            ) from None
    expect_equal(running.model.sizes, [1, 3], "the rows of each model call")


def test_the_batcher_keeps_serving_after_a_model_error(start: Start) -> None:
    running = start()
    expect_error(running.post(f"{POISON} {TICKETS[0]}"), 500, "prediction_failed")
    body = prediction(running.post(TICKETS[1]), TICKETS[1])
    expect_equal(body, reference(TICKETS[1]), f"the next request's answer, for {TICKETS[1]!r}")


# --- A bounded queue ----------------------------------------------------------------------


def test_a_full_queue_is_a_503_with_retry_after(start: Start) -> None:
    running = start(gated=True, max_queue=2)
    first = running.hold_first_batch()
    queued = [running.send(text) for text in TICKETS[1:3]]
    running.wait_until_queued(2, "2 more requests (BATCHER_MAX_QUEUE=2)")
    refused = running.post(TICKETS[3])
    error = expect_error(refused, 503, "overloaded")
    if not isinstance(error.get("message"), str) or not error["message"]:
        raise AssertionError(f"The 503 body needs a non-empty message. Got {error}.")
    retry_after = refused.headers.get("retry-after", "")
    if not retry_after.isdigit() or int(retry_after) < 1:
        raise AssertionError(
            "The 503 for a full queue must say when to retry: a Retry-After header of whole "
            f"seconds. Got {retry_after or '(none)'}."
        )
    running.model.gate.set()
    answers = [first.result(), *(future.result() for future in queued)]
    for text, response in zip(TICKETS[:3], answers, strict=True):
        expect_equal(prediction(response, text), reference(text), f"the answer to {text!r}")
    expect_equal(running.model.sizes, [1, 2], "the rows of each model call (the refused one: 0)")


# --- Shutdown and clients that leave -------------------------------------------------------


def test_shutdown_leaves_no_task_pending(exercise: Callable[[str], Any]) -> None:
    module = exercise("app")
    original = module.app.router.lifespan_context
    leftover: list[asyncio.Task[Any]] = []

    @asynccontextmanager
    async def observed(app: Any) -> Any:
        before = asyncio.all_tasks()
        async with original(app) as state:
            started = asyncio.all_tasks() - before  # the tasks your start-up made
            yield state
        # Every task your lifespan started must have ended when its shutdown is over.
        leftover.extend(task for task in started if not task.done())

    module.app.router.lifespan_context = observed
    with TestClient(module.app) as client:
        prediction(client.post("/tickets/predict", json={"text": TICKETS[0]}), TICKETS[0])
    if leftover:
        raise AssertionError(
            f"After shutdown, {len(leftover)} task(s) your app started still run: "
            f"{[task.get_coro() for task in leftover]}. At shutdown the lifespan must call "
            "stop(), and stop() must cancel the batching task AND await it."
        )


def _cancel_scenario(module: Any) -> tuple[list[list[str]], dict[str, Any]]:
    """A held batch whose client leaves; three more requests queue; b's client leaves too."""
    calls: list[list[str]] = []
    entered = threading.Event()
    gate = threading.Event()

    def predict(items: list[str]) -> list[str]:
        calls.append(list(items))
        entered.set()
        gate.wait(GATE_TIMEOUT)
        return [f"answer to {item}" for item in items]

    async def scenario() -> dict[str, Any]:
        batcher = module.MicroBatcher(predict, max_batch_size=8, max_wait=0.01, max_queue=8)
        await batcher.start()
        outcome: dict[str, Any] = {}
        try:
            first = asyncio.create_task(batcher.submit("first"))
            await asyncio.to_thread(entered.wait, PROBE_TIMEOUT)
            tasks = {name: asyncio.create_task(batcher.submit(name)) for name in "abc"}
            deadline = time.monotonic() + PROBE_TIMEOUT
            while batcher.queued < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            first.cancel()  # this client leaves while the model works on its batch
            tasks["b"].cancel()  # and b's client while b waits in the queue
            await asyncio.sleep(0)
            gate.set()
            for name, task in {"a": tasks["a"], "c": tasks["c"]}.items():
                try:
                    outcome[name] = await asyncio.wait_for(task, READ_TIMEOUT)
                except TimeoutError:
                    outcome[name] = "(no answer)"
            try:
                outcome["d"] = await asyncio.wait_for(batcher.submit("d"), READ_TIMEOUT)
            except TimeoutError:
                outcome["d"] = "(no answer)"
        finally:
            gate.set()
            stopping = asyncio.create_task(batcher.stop())
            await asyncio.wait({stopping}, timeout=READ_TIMEOUT)
        return outcome

    return calls, asyncio.run(scenario())


def test_a_cancelled_request_does_not_break_the_batch(exercise: Callable[[str], Any]) -> None:
    _, outcome = _cancel_scenario(exercise("app"))
    expected = {name: f"answer to {name}" for name in ("a", "c", "d")}
    expect_equal(
        outcome,
        expected,
        "MicroBatcher called directly: the model works on 'first'; 'a', 'b' and 'c' queue; "
        "the callers of 'first' and 'b' are cancelled; then 'd' comes alone. The answers "
        "of the others",
    )


def test_a_request_that_leaves_is_removed_from_its_batch(exercise: Callable[[str], Any]) -> None:
    calls, _ = _cancel_scenario(exercise("app"))
    expect_equal(
        calls,
        [["first"], ["a", "c"], ["d"]],
        "MicroBatcher called directly: the items of each model call, when b's caller was "
        "cancelled while b waited in the queue (and first's while the model worked on it)",
    )


# --- Bounded input --------------------------------------------------------------------------


def test_a_bad_ticket_is_a_422_and_never_reaches_the_model(start: Start) -> None:
    running = start(live=False)
    prediction(running.post(TICKETS[0]), TICKETS[0])  # a valid request first
    for body in ({"text": "   "}, {"text": "x" * 2001}, {}, {"text": 7}):
        response = running.http.post("/tickets/predict", json=body)
        error = expect_error(response, 422, "validation_error")
        locations = [detail.get("loc") for detail in error.get("details", [])]
        expect_equal(locations, [["body", "text"]], f"the error locations for body {body}")
    expect_equal(running.model.sizes, [1], "the rows of each model call (only the valid one)")


def test_a_body_over_the_limit_is_a_413(start: Start) -> None:
    running = start(live=False)
    prediction(running.post(TICKETS[0]), TICKETS[0])  # a valid request first
    big = b'{"text": "' + b"x" * 20_000 + b'"}'

    def chunks() -> Iterator[bytes]:
        yield from (big[i : i + 4096] for i in range(0, len(big), 4096))

    declared = running.http.post("/tickets/predict", content=big)
    expect_status(declared, 413)
    streamed = running.http.post(
        "/tickets/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    expect_error(streamed, 413, "content_too_large")
    expect_equal(running.model.sizes, [1], "the rows of each model call (only the valid one)")
