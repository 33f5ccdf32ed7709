"""Graded tests for step 06. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/06_async_concurrency`. Points and hints live in
course.toml. Each test starts simulated model services (`coursekit.upstream`) on
127.0.0.1, tells your app where they are through the ENSEMBLE_* environment variables,
imports your app.py afresh, and calls it: in-process with `TestClient`, or under a real
uvicorn server where concurrency must be real. Overlap and the concurrency bound are
measured by the upstreams' own counters while the test holds their answers back, never
by a stopwatch.
"""

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from time import monotonic
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from autograder.expect import (
    expect_equal,
    expect_exact_keys,
    expect_fields,
    expect_json,
    expect_validation_error,
)
from coursekit.server import free_port, serve_in_thread
from coursekit.upstream import Upstream, make_upstream, running_upstreams

TEXT = "The battery died after an hour, but the screen is lovely."

Configure = Callable[..., Any]


@pytest.fixture
def configured_app(monkeypatch: pytest.MonkeyPatch, exercise: Callable[[str], Any]) -> Configure:
    """Set the ENSEMBLE_* variables as an operator would, then import app.py afresh."""

    def configure(urls: list[str], *, timeout: float = 5.0, max_in_flight: int = 8) -> Any:
        monkeypatch.setenv("ENSEMBLE_UPSTREAM_URLS", json.dumps(urls))
        monkeypatch.setenv("ENSEMBLE_TIMEOUT", str(timeout))
        monkeypatch.setenv("ENSEMBLE_MAX_IN_FLIGHT", str(max_in_flight))
        return exercise("app").app

    return configure


@contextmanager
def serve(app: Any) -> Iterator[httpx.Client]:
    """Your app under a real uvicorn server, and an HTTP client for it (thread-safe)."""
    stack = ExitStack()
    try:
        base_url = stack.enter_context(serve_in_thread(app, timeout_graceful_shutdown=1))
    except RuntimeError:
        # uvicorn only logs why start-up failed; running the lifespan here raises it.
        with TestClient(app):
            pass
        raise AssertionError(
            "Your app did not start under uvicorn; check lifespan() and the server's log."
        ) from None
    with stack, httpx.Client(base_url=base_url, timeout=10.0) as http:
        yield http


def answer(upstream: Upstream, url: str, text: str = TEXT) -> dict[str, Any]:
    """The result entry of an upstream that answered."""
    prediction = upstream.prediction(text)
    return {
        "upstream": url,
        "label": prediction["label"],
        "score": prediction["score"],
        "error": None,
    }


def failure(url: str, error: str) -> dict[str, Any]:
    """The result entry of an upstream that did not answer."""
    return {"upstream": url, "label": None, "score": None, "error": error}


def entries(body: Any) -> list[dict[str, Any]]:
    """The `results` of a response, each reduced to the four documented fields."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise AssertionError(f"The response needs a `results` list of objects. Got {body}.")
    fields = ("upstream", "label", "score", "error")
    return [{field: result.get(field) for field in fields} for result in results]


def find_text(upstreams: list[Upstream], wanted: Callable[[list[dict[str, Any]]], bool]) -> str:
    """A text for which the upstreams' (deterministic) predictions have the wanted pattern."""
    for number in range(10_000):
        text = f"Review number {number}: it works, mostly."
        if wanted([upstream.prediction(text) for upstream in upstreams]):
            return text
    raise RuntimeError("no such text")  # never: the patterns below are common


def test_every_upstream_answers_in_the_results(configured_app: Configure) -> None:
    upstreams = [make_upstream(name, delay=0.02) for name in ("alpha", "beta", "gamma")]
    with (
        running_upstreams(*upstreams) as urls,
        TestClient(configured_app(list(urls.values()))) as client,
    ):
        body = expect_json(client.post("/ensemble", json={"text": TEXT}))
    expect_exact_keys(body, ["label", "votes", "results"], "the POST /ensemble response")
    expected = [answer(upstream, urls[upstream.name]) for upstream in upstreams]
    expect_equal(entries(body), expected, "the results of three upstreams that all answered")
    expect_equal([u.calls for u in upstreams], [1, 1, 1], "the calls each upstream received")


def test_results_follow_the_order_of_the_configured_upstreams(configured_app: Configure) -> None:
    # The first upstream answers last and the last one first.
    upstreams = [
        make_upstream("slowest", delay=0.25),
        make_upstream("middle", delay=0.12),
        make_upstream("fastest", delay=0.0),
    ]
    with (
        running_upstreams(*upstreams) as urls,
        TestClient(configured_app(list(urls.values()))) as client,
    ):
        body = expect_json(client.post("/ensemble", json={"text": TEXT}))
    expect_equal(
        [entry["upstream"] for entry in entries(body)],
        list(urls.values()),
        "the order of `results` (it must be the order of ENSEMBLE_UPSTREAM_URLS, "
        "not the order in which the upstreams answered)",
    )


def test_the_upstreams_are_called_at_the_same_time(configured_app: Configure) -> None:
    # Gated upstreams hold every call until the test opens them, so the calls can only
    # all be in flight together if the app made them concurrently.
    upstreams = [
        make_upstream(name, delay=0.0, gated=True, gate_timeout=5)
        for name in ("alpha", "beta", "gamma")
    ]
    with (
        running_upstreams(*upstreams) as urls,
        serve(configured_app(list(urls.values()))) as http,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        pending = pool.submit(http.post, "/ensemble", json={"text": TEXT})
        deadline = monotonic() + 5.0
        try:
            reached = [
                upstream.wait_for_in_flight(1, timeout=max(0.0, deadline - monotonic()))
                for upstream in upstreams
            ]
        finally:
            for upstream in upstreams:
                upstream.open_gate()
        response = pending.result()
    called = [upstream.name for upstream, ok in zip(upstreams, reached, strict=True) if ok]
    if not all(reached):
        raise AssertionError(
            "One POST /ensemble to three upstreams that hold their answers back: only "
            f"{called or 'none'} of ['alpha', 'beta', 'gamma'] had been called after 5 s. The "
            "calls must be in flight together: start them all with asyncio.gather and an "
            "awaited httpx.AsyncClient, never a blocking client or time.sleep in async def."
        )
    body = expect_json(response)
    expected = [answer(upstream, urls[upstream.name]) for upstream in upstreams]
    expect_equal(entries(body), expected, "the results once the upstreams answered")


def test_one_client_reuses_its_connection_across_requests(configured_app: Configure) -> None:
    upstream = make_upstream("alpha", delay=0.0)
    client_ports: list[int] = []

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Note the caller's port: one port means one TCP connection, kept open and reused.
        if scope["type"] == "http" and scope["path"] == "/predict":
            client_ports.append(scope["client"][1])
        await upstream.app(scope, receive, send)

    with (
        serve_in_thread(recording, timeout_graceful_shutdown=1) as upstream_url,
        TestClient(configured_app([upstream_url])) as client,
    ):
        for number in range(3):
            expect_json(client.post("/ensemble", json={"text": f"{TEXT} ({number})"}))
    expect_equal(len(client_ports), 3, "the calls the upstream received for 3 requests")
    if len(set(client_ports)) != 1:
        raise AssertionError(
            f"3 requests in a row reached the upstream over {len(set(client_ports))} different "
            "connections: a new httpx.AsyncClient per request opens a new connection each "
            "time. Open one client in lifespan and share it, so its pool reuses the connection."
        )


def test_the_combined_label_is_the_majority(configured_app: Configure) -> None:
    upstreams = [make_upstream(name, delay=0.02) for name in ("alpha", "beta", "gamma")]

    def two_against_one_stronger(predictions: list[dict[str, Any]]) -> bool:
        first, middle, last = predictions
        return first["label"] == last["label"] != middle["label"] and middle["score"] > max(
            first["score"], last["score"]
        )

    text = find_text(upstreams, two_against_one_stronger)
    majority = upstreams[0].prediction(text)["label"]
    with (
        running_upstreams(*upstreams) as urls,
        TestClient(configured_app(list(urls.values()))) as client,
    ):
        body = expect_json(client.post("/ensemble", json={"text": text}))
    labels = [entry["label"] for entry in entries(body)]
    expect_fields(
        body,
        {"label": majority, "votes": 2},
        f"the combined answer when the upstreams say {labels} (the lone one has the top score)",
    )


def test_a_tie_goes_to_the_higher_total_score(configured_app: Configure) -> None:
    upstreams = [make_upstream(name, delay=0.02) for name in ("alpha", "beta")]

    def later_label_scores_higher(predictions: list[dict[str, Any]]) -> bool:
        first, second = predictions
        # The winner comes second and last alphabetically: neither "first seen" nor
        # "alphabetical" picks it by accident.
        return first["label"] < second["label"] and first["score"] < second["score"]

    text = find_text(upstreams, later_label_scores_higher)
    winner = upstreams[1].prediction(text)
    with (
        running_upstreams(*upstreams) as urls,
        TestClient(configured_app(list(urls.values()))) as client,
    ):
        body = expect_json(client.post("/ensemble", json={"text": text}))
    votes = [(entry["label"], entry["score"]) for entry in entries(body)]
    expect_fields(
        body,
        {"label": winner["label"], "votes": 1},
        f"the combined answer for a one-to-one tie between (label, score) pairs {votes}",
    )


def test_a_slow_upstream_is_cut_off_at_the_timeout(configured_app: Configure) -> None:
    alpha, beta = make_upstream("alpha", delay=0.02), make_upstream("beta", delay=0.02)
    stuck = make_upstream("stuck", delay=30)  # far longer than the 0.3 s timeout
    with (
        running_upstreams(alpha, stuck, beta) as urls,
        serve(configured_app(list(urls.values()), timeout=0.3)) as http,
    ):
        try:
            # 4 s: well above 0.3 s, well below httpx's default timeout of 5 s.
            response = http.post("/ensemble", json={"text": TEXT}, timeout=4.0)
        except httpx.TimeoutException:
            raise AssertionError(
                "POST /ensemble did not answer within 4 s while one of its upstreams "
                "hangs. Cut each upstream call off after ENSEMBLE_TIMEOUT seconds (0.3 "
                "here): give the shared httpx.AsyncClient timeout=settings.timeout."
            ) from None
    body = expect_json(response)
    expected = [
        answer(alpha, urls["alpha"]),
        failure(urls["stuck"], "timeout"),
        answer(beta, urls["beta"]),
    ]
    expect_equal(entries(body), expected, "the results when the middle upstream hangs")


def test_a_failing_upstream_gets_an_error_entry(configured_app: Configure) -> None:
    alpha = make_upstream("alpha", delay=0.02)
    broken = make_upstream("broken", delay=0.02, fail=True)  # answers 503
    crashing = make_upstream("crashing", delay=0.02, fail=True, status_code=500)
    with (
        running_upstreams(alpha, broken, crashing) as urls,
        TestClient(configured_app(list(urls.values()))) as client,
    ):
        body = expect_json(client.post("/ensemble", json={"text": TEXT}))
    expected = [
        answer(alpha, urls["alpha"]),
        failure(urls["broken"], "HTTP 503"),
        failure(urls["crashing"], "HTTP 500"),
    ]
    expect_equal(entries(body), expected, "the results when two of three upstreams fail")
    expect_fields(
        body,
        {"label": alpha.prediction(TEXT)["label"], "votes": 1},
        "the combined answer when only alpha answered",
    )


def test_an_unreachable_upstream_gets_an_error_entry(configured_app: Configure) -> None:
    alpha = make_upstream("alpha", delay=0.02)
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with (
        running_upstreams(alpha) as urls,
        TestClient(configured_app([nobody, urls["alpha"]])) as client,
    ):
        body = expect_json(client.post("/ensemble", json={"text": TEXT}))
    expected = [failure(nobody, "unreachable"), answer(alpha, urls["alpha"])]
    expect_equal(entries(body), expected, "the results when the first upstream is unreachable")


def test_when_every_upstream_fails_the_answer_is_502(configured_app: Configure) -> None:
    upstreams = [make_upstream(name, delay=0.02) for name in ("alpha", "beta")]
    with (
        running_upstreams(*upstreams) as urls,
        TestClient(configured_app(list(urls.values()))) as client,
    ):
        expect_json(client.post("/ensemble", json={"text": TEXT}))  # all well at first
        for upstream in upstreams:
            upstream.fail = True
        response = client.post("/ensemble", json={"text": TEXT})
    body = expect_json(response, 502)
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str) or not detail:
        raise AssertionError(
            f'The 502 body must be {{"detail": "<a message>"}} (HTTPException). Got {body}.'
        )


def test_calls_in_flight_stay_within_the_bound(configured_app: Configure) -> None:
    shared = make_upstream("shared", delay=0.0, gated=True, gate_timeout=5)
    with (
        running_upstreams(shared) as urls,
        serve(configured_app([urls["shared"]], max_in_flight=2)) as http,
        ThreadPoolExecutor(max_workers=6) as pool,
    ):
        pending = [
            pool.submit(http.post, "/ensemble", json={"text": f"{TEXT} ({n})"}) for n in range(6)
        ]
        try:
            reached_bound = shared.wait_for_in_flight(2, timeout=5.0)
            # Nothing can answer while the gate is shut; give extra calls time to arrive.
            went_over = shared.wait_for_in_flight(3, timeout=1.0)
            held = shared.in_flight
        finally:
            shared.open_gate()
        responses = [future.result() for future in pending]
    if went_over:
        raise AssertionError(
            f"6 requests at once with ENSEMBLE_MAX_IN_FLIGHT=2: {held} upstream calls were in "
            "flight together. Share ONE asyncio.Semaphore(max_in_flight), made in lifespan, "
            "and hold it (`async with`) around every upstream call."
        )
    if not reached_bound:
        raise AssertionError(
            "6 requests at once with ENSEMBLE_MAX_IN_FLIGHT=2: the upstream never had 2 "
            "calls in flight together. Calls must run concurrently, up to the bound."
        )
    for response in responses:
        expect_json(response)
    expect_equal(shared.calls, 6, "the calls the upstream received (one per request)")
    expect_equal(shared.peak_in_flight, 2, "the most upstream calls in flight at once")


def test_a_bad_body_is_a_422(configured_app: Configure) -> None:
    upstream = make_upstream("alpha", delay=0.0)
    with running_upstreams(upstream) as urls, TestClient(configured_app([urls["alpha"]])) as client:
        expect_json(client.post("/ensemble", json={"text": "a valid request first"}))
        expect_validation_error(
            client.post("/ensemble", json={"txt": "typo"}), ["body", "text"], "missing"
        )
        expect_validation_error(
            client.post("/ensemble", json={"text": 42}), ["body", "text"], "string_type"
        )
        expect_validation_error(
            client.post("/ensemble", json={"text": ""}), ["body", "text"], "string_too_short"
        )
    expect_equal(upstream.calls, 1, "the upstream calls (a rejected body never reaches them)")
