"""Graded tests for step 06. Read them: they are the exact contract of the exercise.

Run them with `pytest exercises/06_async_concurrency`. Points and hints live in
course.toml. Each test starts simulated model services (`coursekit.upstream`) on
127.0.0.1, tells your app where they are through the ENSEMBLE_* environment variables,
imports your app.py afresh, and calls it under a real uvicorn server (`ensemble`, on the
grader's `app_server`); the three tests that add a route of their own to your app call
it in-process (`configured_module`). Overlap, the concurrency bound and the
deadline are shown by mechanisms the test controls: the upstreams' own counters, gates
that hold their answers back, permits the test holds, never by a stopwatch.
"""

import json
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from time import monotonic
from typing import Annotated, Any

import httpx2
import pytest
from fastapi import Depends
from fastapi.testclient import TestClient

from autograder.expect import (
    OutOfTime,
    describe,
    expect_equal,
    expect_exact_keys,
    expect_fields,
    expect_json,
    expect_status,
    expect_validation_error,
    shown,
)
from coursekit.server import free_port, serve_app_in_thread, serve_in_thread
from coursekit.upstream import Upstream, make_upstream, running_upstreams

TEXT = "The battery died after an hour, but the screen is lovely."
MAX_TEXT_LENGTH = 10_000  # characters: in the statement
MAX_BODY_SIZE = 131_072  # bytes: in the statement
JSON_HEADERS = {"content-type": "application/json"}

Configure = Callable[..., Any]


def environment(urls: list[str], *, timeout: float = 5.0, max_in_flight: int = 8) -> dict[str, str]:
    """The ENSEMBLE_* variables an operator would set."""
    return {
        "ENSEMBLE_UPSTREAM_URLS": json.dumps(urls),
        "ENSEMBLE_TIMEOUT": str(timeout),
        "ENSEMBLE_MAX_IN_FLIGHT": str(max_in_flight),
    }


@pytest.fixture
def configured_module(monkeypatch: pytest.MonkeyPatch, exercise: Callable[[str], Any]) -> Configure:
    """Set the ENSEMBLE_* variables as an operator would, then import app.py afresh."""

    def configure(urls: list[str], **settings: Any) -> Any:
        for name, value in environment(urls, **settings).items():
            monkeypatch.setenv(name, value)
        return exercise("app")

    return configure


Start = Callable[..., AbstractContextManager[httpx2.Client]]


@pytest.fixture
def ensemble(app_server: Callable[[dict[str, str]], AbstractContextManager[str]]) -> Start:
    """`with ensemble(urls, timeout=..., max_in_flight=...) as client:` your app, imported
    afresh, under a real uvicorn server started with those ENSEMBLE_* variables set (the
    grader's `app_server`; `setup=` sets it up for a test only, coursekit/app_setups.py),
    and an
    HTTP client for it (thread-safe)."""

    @contextmanager
    def start(urls: list[str], setup: list[str] = (), **settings: Any) -> Iterator[httpx2.Client]:
        with (
            app_server(environment(urls, **settings), setup=setup) as base_url,
            httpx2.Client(base_url=base_url, timeout=None) as client,
        ):
            yield client

    return start


def mounted(apps: dict[str, Any]) -> Any:
    """One ASGI app serving each of `apps` under its prefix: `/a/predict` is `/predict` of "a".

    Several upstream URLs then share one server (one start, one stop), and one
    Upstream mounted under several prefixes counts the calls made to all of them.
    Serve it with `lifespan="off"`.
    """

    async def router(scope: dict[str, Any], receive: Any, send: Any) -> None:
        prefix, _, rest = scope["path"].lstrip("/").partition("/")
        path = "/" + rest
        routed = {**scope, "path": path, "raw_path": path.encode()}
        await apps[prefix](routed, receive, send)

    return router


@contextmanager
def serve(app: Any) -> Iterator[httpx2.Client]:
    """Your app under a real uvicorn server, and an HTTP client for it (thread-safe)."""
    with (
        serve_app_in_thread(app, timeout_graceful_shutdown=1) as base_url,
        httpx2.Client(base_url=base_url, timeout=10.0) as http,
    ):
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


def test_every_upstream_answers_in_the_results(ensemble: Start) -> None:
    upstreams = [make_upstream(name, delay=0.0) for name in ("alpha", "beta", "gamma")]
    with (
        running_upstreams(*upstreams) as urls,
        ensemble(list(urls.values())) as client,
    ):
        body = expect_json(client.post("/ensemble", json={"text": TEXT}))
    expect_exact_keys(body, ["label", "votes", "results"], "the POST /ensemble response")
    expected = [answer(upstream, urls[upstream.name]) for upstream in upstreams]
    expect_equal(entries(body), expected, "the results of three upstreams that all answered")
    expect_equal([u.calls for u in upstreams], [1, 1, 1], "the calls each upstream received")


def test_results_follow_the_order_of_the_configured_upstreams(ensemble: Start) -> None:
    # The test makes the first upstream answer last and the last one first: it opens the
    # gates one by one, from the last upstream to the first, each once the one before
    # has answered.
    upstreams = [
        make_upstream(name, delay=0.0, gated=True, gate_timeout=5)
        for name in ("slowest", "middle", "fastest")
    ]
    with (
        running_upstreams(*upstreams) as urls,
        ensemble(list(urls.values())) as client,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        pending = pool.submit(client.post, "/ensemble", json={"text": TEXT})
        try:
            for upstream in reversed(upstreams):
                upstream.wait_for_in_flight(1, timeout=5.0)
                upstream.open_gate()
                upstream.wait_for_idle(timeout=5.0)
        finally:
            for upstream in upstreams:
                upstream.open_gate()
        body = expect_json(pending.result())
    expect_equal(
        [entry["upstream"] for entry in entries(body)],
        list(urls.values()),
        "the order of `results` (it must be the order of ENSEMBLE_UPSTREAM_URLS, "
        "not the order in which the upstreams answered: fastest, middle, slowest)",
    )


def test_the_upstreams_are_called_at_the_same_time(ensemble: Start) -> None:
    # Gated upstreams hold every call until the test opens them, so the calls can only
    # all be in flight together if the app made them concurrently.
    upstreams = [
        make_upstream(name, delay=0.0, gated=True, gate_timeout=5)
        for name in ("alpha", "beta", "gamma")
    ]
    with (
        running_upstreams(*upstreams) as urls,
        ensemble(list(urls.values())) as http,
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
            "awaited httpx2.AsyncClient, never a blocking client or time.sleep in async def."
        )
    body = expect_json(response)
    expected = [answer(upstream, urls[upstream.name]) for upstream in upstreams]
    expect_equal(entries(body), expected, "the results once the upstreams answered")


def test_one_client_reuses_its_connection_across_requests(ensemble: Start) -> None:
    upstream = make_upstream("alpha", delay=0.0)
    client_ports: list[int] = []

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Note the caller's port: one port means one TCP connection, kept open and reused.
        if scope["type"] == "http" and scope["path"] == "/predict":
            client_ports.append(scope["client"][1])
        await upstream.app(scope, receive, send)

    with (
        serve_in_thread(recording, timeout_graceful_shutdown=1) as upstream_url,
        ensemble([upstream_url]) as client,
    ):
        for number in range(3):
            expect_json(client.post("/ensemble", json={"text": f"{TEXT} ({number})"}))
    expect_equal(len(client_ports), 3, "the calls the upstream received for 3 requests")
    if len(set(client_ports)) != 1:
        raise AssertionError(
            f"3 requests in a row reached the upstream over {len(set(client_ports))} different "
            "connections: a new httpx2.AsyncClient per request opens a new connection each "
            "time. Open one client in lifespan and share it, so its pool reuses the connection."
        )


def test_the_client_is_closed_at_shutdown(configured_module: Configure) -> None:
    module = configured_module([f"http://127.0.0.1:{free_port()}"])  # never called
    seen: list[Any] = []

    # A route added for this test only: it receives your get_client's client.
    @module.app.get("/test-only/client")
    async def which_client(client: Annotated[Any, Depends(module.get_client)]) -> dict[str, bool]:
        seen.append(client)
        return {"closed": client.is_closed}

    with TestClient(module.app) as client:
        for _ in range(2):
            expect_json(client.get("/test-only/client"))
    expect_equal(len(seen), 2, "the clients that get_client gave 2 requests")
    if seen[0] is not seen[1]:
        raise AssertionError(
            "get_client gave 2 requests 2 different clients: open ONE httpx2.AsyncClient in "
            "lifespan and yield it, so every request shares it."
        )
    if not seen[0].is_closed:
        raise AssertionError(
            "The shared httpx2.AsyncClient is still open after the app shut down: open it "
            "with `async with httpx2.AsyncClient(...) as client:` around the lifespan's "
            "`yield`, so that shutdown closes it and its connections."
        )


def test_the_combined_label_is_the_majority(ensemble: Start) -> None:
    upstreams = [make_upstream(name, delay=0.0) for name in ("alpha", "beta", "gamma")]

    def two_against_one_stronger(predictions: list[dict[str, Any]]) -> bool:
        first, middle, last = predictions
        return first["label"] == last["label"] != middle["label"] and middle["score"] > max(
            first["score"], last["score"]
        )

    text = find_text(upstreams, two_against_one_stronger)
    majority = upstreams[0].prediction(text)["label"]
    with (
        running_upstreams(*upstreams) as urls,
        ensemble(list(urls.values())) as client,
    ):
        body = expect_json(client.post("/ensemble", json={"text": text}))
    labels = [entry["label"] for entry in entries(body)]
    expect_fields(
        body,
        {"label": majority, "votes": 2},
        f"the combined answer when the upstreams say {labels} (the lone one has the top score)",
    )


def totals(predictions: list[dict[str, Any]]) -> dict[str, float]:
    """The summed score of each label the predictions give."""
    total: dict[str, float] = {}
    for prediction in predictions:
        total[prediction["label"]] = total.get(prediction["label"], 0.0) + prediction["score"]
    return total


def tie_won_on_total(winner_sorts_last: bool) -> Callable[[list[dict[str, Any]]], bool]:
    """Two votes each; the winner (higher total) sorts last or first of the two labels.

    The loser is seen first and has the top single score: neither "first seen", nor
    "highest single score", nor (over both patterns) "alphabetical" picks the winner.
    """

    def wanted(predictions: list[dict[str, Any]]) -> bool:
        labels = [prediction["label"] for prediction in predictions]
        if sorted(Counter(labels).values()) != [2, 2]:
            return False
        total = totals(predictions)
        winner = max(total, key=total.__getitem__)
        loser = min(total, key=total.__getitem__)
        top = max(predictions, key=lambda prediction: prediction["score"])
        return (
            total[winner] > total[loser]
            and (winner > loser) == winner_sorts_last
            and labels[0] == loser
            and top["label"] == loser
        )

    return wanted


def test_a_tie_goes_to_the_higher_total_score(ensemble: Start) -> None:
    upstreams = [make_upstream(name, delay=0.0) for name in ("alpha", "beta", "gamma", "delta")]
    texts = [find_text(upstreams, tie_won_on_total(last)) for last in (True, False)]
    with (
        running_upstreams(*upstreams) as urls,
        ensemble(list(urls.values())) as client,
    ):
        bodies = [expect_json(client.post("/ensemble", json={"text": text})) for text in texts]
    for text, body in zip(texts, bodies, strict=True):
        total = totals([upstream.prediction(text) for upstream in upstreams])
        votes = [(entry["label"], entry["score"]) for entry in entries(body)]
        expect_fields(
            body,
            {"label": max(total, key=total.__getitem__), "votes": 2},
            f"the combined answer for a two-to-two tie between (label, score) pairs {votes}",
        )


def test_a_hung_or_trickling_upstream_is_cut_off_at_the_deadline(
    ensemble: Start,
) -> None:
    # Both hold their answer back until the test opens their gates, which it does only
    # after the response: "stuck" sends nothing, "trickler" sends a space every 50 ms, so
    # each read is quick and only a deadline on the whole call can cut it off.
    alpha, beta = make_upstream("alpha", delay=0.0), make_upstream("beta", delay=0.0)
    stuck = make_upstream("stuck", delay=0.0, gated=True, gate_timeout=5)
    trickler = make_upstream("trickler", delay=0.0, gated=True, gate_timeout=5, trickle=True)
    with (
        running_upstreams(alpha, stuck, trickler, beta) as urls,
        ensemble(list(urls.values()), timeout=0.5) as client,
    ):
        try:
            response = client.post("/ensemble", json={"text": TEXT})
        finally:
            stuck.open_gate()
            trickler.open_gate()
    body = expect_json(response)
    expected = [
        answer(alpha, urls["alpha"]),
        failure(urls["stuck"], "timeout"),
        failure(urls["trickler"], "timeout"),
        answer(beta, urls["beta"]),
    ]
    what = {
        "stuck": "sends nothing, for far longer than 0.5 s",
        "trickler": "answers 200, then sends a space every 50 ms for far longer than 0.5 s: "
        "no single read waits long, so only a deadline on the whole call (asyncio.timeout) "
        "cuts it off (after 5 s the test ends it itself, mid-answer)",
    }
    got = entries(body)
    for name, wanted, entry in zip(urls, expected, got, strict=False):
        if name in what and entry != wanted:
            raise AssertionError(
                f"With ENSEMBLE_TIMEOUT=0.5, the upstream {name!r} {what[name]}. Its entry "
                f"should be {shown(wanted)}; got {shown(entry)}."
            )
    expect_equal(got, expected, "the results with ENSEMBLE_TIMEOUT=0.5, two upstreams too slow")


def test_the_wait_for_a_permit_counts_against_the_deadline(ensemble: Start) -> None:
    alpha = make_upstream("alpha", delay=0.0)
    # Routes added for this test only (coursekit/app_setups.py): /test-only/hold takes
    # permits of the semaphore that get_limiter gives, and holds them until the test lets
    # go (5 s at the most).
    holder = ["coursekit.app_setups:permit_holder"]
    with (
        running_upstreams(alpha) as urls,
        ensemble([urls["alpha"]], timeout=0.1, max_in_flight=2, setup=holder) as client,
    ):
        try:
            state = expect_json(client.post("/test-only/hold", params={"permits": 2}))
            response = client.post("/ensemble", json={"text": TEXT})
        finally:
            client.post("/test-only/let-go")
    expect_equal(state, {"locked": True}, "the semaphore of get_limiter once the test holds 2")
    if response.status_code != 502:
        raise AssertionError(
            "With ENSEMBLE_TIMEOUT=0.1 and every permit of the semaphore held (by the test, "
            f"for up to 5 s), {describe(response)} answered {response.status_code}: "
            f"{shown(response.text)}. The one call had to wait for a permit until its deadline "
            "passed, so nothing answered: expected 502. Start the deadline before the wait "
            "for a permit, so the wait counts against it."
        )
    expect_equal(alpha.calls, 0, "the calls the upstream received while no permit was free")


def test_a_failing_upstream_gets_an_error_entry(ensemble: Start) -> None:
    alpha = make_upstream("alpha", delay=0.0)
    broken = make_upstream("broken", delay=0.0, fail=True)  # answers 503
    crashing = make_upstream("crashing", delay=0.0, fail=True, status_code=500)
    with (
        running_upstreams(alpha, broken, crashing) as urls,
        ensemble(list(urls.values())) as client,
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


def test_an_upstream_with_a_bad_answer_gets_an_error_entry(ensemble: Start) -> None:
    alpha = make_upstream("alpha", delay=0.0)
    html = make_upstream("html", delay=0.0, body=b"<html>Busy</html>", media_type="text/html")
    no_score = make_upstream("no-score", delay=0.0, body=b'{"model": "m", "label": "positive"}')
    wordy = make_upstream(
        "wordy", delay=0.0, body=b'{"model": "m", "label": "positive", "score": "high"}'
    )
    with (
        running_upstreams(alpha, html, no_score, wordy) as urls,
        ensemble(list(urls.values())) as client,
    ):
        body = expect_json(client.post("/ensemble", json={"text": TEXT}))
    expected = [
        answer(alpha, urls["alpha"]),
        failure(urls["html"], "invalid answer"),
        failure(urls["no-score"], "invalid answer"),
        failure(urls["wordy"], "invalid answer"),
    ]
    expect_equal(
        entries(body),
        expected,
        "the results when three upstreams answer 200 with a body that is not a prediction "
        '(an HTML page, JSON without "score", a "score" of "high")',
    )


def test_an_unreachable_upstream_gets_an_error_entry(ensemble: Start) -> None:
    alpha = make_upstream("alpha", delay=0.0)
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with (
        running_upstreams(alpha) as urls,
        ensemble([nobody, urls["alpha"]]) as client,
    ):
        body = expect_json(client.post("/ensemble", json={"text": TEXT}))
    expected = [failure(nobody, "unreachable"), answer(alpha, urls["alpha"])]
    expect_equal(entries(body), expected, "the results when the first upstream is unreachable")


def test_when_every_upstream_fails_the_answer_is_502(ensemble: Start) -> None:
    upstreams = [make_upstream(name, delay=0.0) for name in ("alpha", "beta")]
    with (
        running_upstreams(*upstreams) as urls,
        ensemble(list(urls.values())) as client,
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


def test_calls_in_flight_stay_within_the_bound(ensemble: Start) -> None:
    # One gated upstream behind three URLs: it counts the calls made to all three. Three
    # requests at once ask it 9 questions; with ENSEMBLE_MAX_IN_FLIGHT=4 only 4 may be
    # in flight, whether the bound is held per request, per call or not at all.
    shared = make_upstream("shared", delay=0.0, gated=True, gate_timeout=5)
    port = free_port()
    urls = [f"http://127.0.0.1:{port}/{prefix}" for prefix in ("a", "b", "c")]
    # A route added for this test only (coursekit/app_setups.py): GET /test-only/limiter
    # answers whether the semaphore get_limiter gives is fully taken.
    state_route = ["coursekit.app_setups:limiter_state"]
    upstream_server = serve_in_thread(
        mounted(dict.fromkeys(("a", "b", "c"), shared.app)),
        port=port,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    with (
        upstream_server,
        ensemble(urls, max_in_flight=4, setup=state_route) as http,
        ThreadPoolExecutor(max_workers=3) as pool,
    ):
        pending = [
            pool.submit(http.post, "/ensemble", json={"text": f"{TEXT} ({n})"}) for n in range(3)
        ]
        try:
            reached_bound = shared.wait_for_in_flight(4, timeout=5.0)
            # While the gate is shut no call can end: 4 in flight means 4 permits held, so
            # the one semaphore must be fully taken now, and no fifth call can start.
            state = expect_json(http.get("/test-only/limiter")) if reached_bound else {}
            held = shared.in_flight
        finally:
            shared.open_gate()
        responses = [future.result() for future in pending]
    if not reached_bound:
        raise OutOfTime(
            "3 requests at once to 3 upstreams with ENSEMBLE_MAX_IN_FLIGHT=4: the upstreams "
            f"never had 4 calls in flight together (at most {shared.peak_in_flight}). Calls "
            "must run concurrently, up to the bound, each holding the semaphore only "
            "while it runs."
        )
    if held > 4 or state.get("locked") is not True:
        raise AssertionError(
            f"3 requests at once to 3 upstreams with ENSEMBLE_MAX_IN_FLIGHT=4: {held} upstream "
            "calls were in flight, and the semaphore that get_limiter gives was "
            f"{'fully taken' if state.get('locked') else 'not fully taken'}. Make ONE "
            "asyncio.Semaphore(max_in_flight) in lifespan, shared by all requests, and hold "
            "it (`async with limiter:`) around each upstream call, not around the whole gather."
        )
    for response in responses:
        body = expect_json(response)
        expect_equal(
            [entry["upstream"] for entry in entries(body)], urls, "the upstreams of the results"
        )
    expect_equal(shared.calls, 9, "the calls the upstreams received (3 per request)")
    expect_equal(shared.peak_in_flight, 4, "the most upstream calls in flight at once")


def test_a_bad_body_is_a_422(ensemble: Start) -> None:
    upstream = make_upstream("alpha", delay=0.0)
    with running_upstreams(upstream) as urls, ensemble([urls["alpha"]]) as client:
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


def test_a_text_over_the_length_limit_is_a_422(ensemble: Start) -> None:
    upstream = make_upstream("alpha", delay=0.0)
    with running_upstreams(upstream) as urls, ensemble([urls["alpha"]]) as client:
        expect_json(client.post("/ensemble", json={"text": "x" * MAX_TEXT_LENGTH}))
        expect_validation_error(
            client.post("/ensemble", json={"text": "x" * (MAX_TEXT_LENGTH + 1)}),
            ["body", "text"],
            "string_too_long",
        )
    expect_equal(upstream.calls, 1, "the upstream calls (a rejected body never reaches them)")


def padded(body: dict[str, Any], size: int) -> bytes:
    """`body` as JSON, padded with spaces to exactly `size` bytes: still valid JSON."""
    data = json.dumps(body).encode()
    return data + b" " * (size - len(data))


def test_a_body_over_the_size_limit_is_a_413(ensemble: Start) -> None:
    upstream = make_upstream("alpha", delay=0.0)

    def chunked(data: bytes) -> Iterator[bytes]:
        # A generator has no length: the body goes out chunked, without Content-Length.
        for start in range(0, len(data), 16_384):
            yield data[start : start + 16_384]

    # The longest text in its longest JSON form: an emoji is two \uXXXX escapes, 12 bytes.
    longest = json.dumps({"text": "\N{GRINNING FACE}" * MAX_TEXT_LENGTH}).encode()
    over = padded({"text": TEXT}, MAX_BODY_SIZE + 1)
    with running_upstreams(upstream) as urls, ensemble([urls["alpha"]]) as client:
        response = client.post("/ensemble", content=longest, headers=JSON_HEADERS)
        if response.status_code == 413:
            raise AssertionError(
                f"POST /ensemble with the longest valid text ({MAX_TEXT_LENGTH:,} emoji, "
                f"written as JSON escapes: {len(longest):,} bytes) answered 413. Any text of "
                f"up to MAX_TEXT_LENGTH characters must fit: the limit is MAX_BODY_SIZE "
                f"({MAX_BODY_SIZE:,} bytes)."
            )
        expect_json(response)
        exactly = padded({"text": TEXT}, MAX_BODY_SIZE)
        expect_json(client.post("/ensemble", content=exactly, headers=JSON_HEADERS))
        expect_status(client.post("/ensemble", content=over, headers=JSON_HEADERS), 413)
        expect_status(client.post("/ensemble", content=chunked(over), headers=JSON_HEADERS), 413)
    expect_equal(upstream.calls, 2, "the upstream calls (a body over the limit never reaches them)")


def test_openapi_lists_every_status_the_route_can_answer(ensemble: Start) -> None:
    upstream = make_upstream("alpha", delay=0.0)
    with running_upstreams(upstream) as urls, ensemble([urls["alpha"]]) as client:
        expect_json(client.post("/ensemble", json={"text": TEXT}))
        # Bytes that are not UTF-8 cannot be read as JSON text: FastAPI answers 400.
        expect_status(
            client.post("/ensemble", content=b'{"text": "\xff"}', headers=JSON_HEADERS), 400
        )
        schema = expect_json(client.get("/openapi.json"))
    expect_equal(
        upstream.calls, 1, "the upstream calls (a body that cannot be read never reaches them)"
    )
    responses = schema.get("paths", {}).get("/ensemble", {}).get("post", {}).get("responses", {})
    missing = [status for status in ("200", "400", "413", "422", "502") if status not in responses]
    if missing:
        raise AssertionError(
            f"/openapi.json: POST /ensemble documents the statuses {sorted(responses)}; it "
            f"can also answer {missing}. Declare them with `responses=` on the route."
        )
