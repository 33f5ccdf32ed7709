"""Simulated upstream model services, for the async and concurrency step.

A fan-out endpoint calls several model services at once. These stand-ins are small
FastAPI apps that answer `POST /predict` after a delay, fail on demand, and count the
requests they are serving, so a test can prove the calls overlapped by reading
`peak_in_flight` instead of timing them with a stopwatch.

    slow = make_upstream("slow", delay=0.2)
    broken = make_upstream("broken", fail=True)
    with running_upstreams(slow, broken) as urls:  # {"slow": "http://127.0.0.1:...", ...}
        ...  # call urls["slow"] + "/predict" with httpx.AsyncClient
    assert slow.peak_in_flight == 5

A hung upstream is one whose delay is far longer than any sane client timeout, such as
`make_upstream("stuck", delay=60)`. It stops waiting as soon as its client goes away
(an `httpx` timeout closes the connection), so its `in_flight` drops back to zero.

Two more kinds of bad upstream: one that answers `200` with a body that is not a
prediction (`make_upstream("html", body=b"<html>...</html>", media_type="text/html")`),
and one that trickles (`trickle=True`): it answers `200` at once, then sends its body one
space every 50 ms for as long as it waits, so no read ever waits long enough to trip a
per-read timeout.
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations of the
# endpoints, and the models they name are local to `_build_app`.

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from coursekit.server import serve_many_in_threads

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

LABELS = ("positive", "negative", "neutral")
TRICKLE_INTERVAL = 0.05  # seconds between two bytes of a trickling upstream


class Upstream:
    """One simulated model service: its FastAPI `app`, its behaviour and its counters.

    `delay`, `fail`, `status_code`, `body`, `media_type` and `trickle` are plain
    attributes read on every request, so a test may change them while the server runs.
    The counters are thread-safe: the app updates them in uvicorn's thread while the
    test reads them in its own.
    """

    def __init__(
        self,
        name: str,
        *,
        delay: float = 0.1,
        fail: bool = False,
        status_code: int = 503,
        gated: bool = False,
        gate_timeout: float = 10.0,
        body: bytes | None = None,
        media_type: str = "application/json",
        trickle: bool = False,
    ) -> None:
        """Build the service; see `make_upstream` for the meaning of each argument."""
        self.name = name
        self.delay = delay
        self.fail = fail
        self.status_code = status_code
        self.body = body
        self.media_type = media_type
        self.trickle = trickle
        self.gate = threading.Event() if gated else None
        self.gate_timeout = gate_timeout
        self._counters = threading.Condition()
        self._calls = 0
        self._in_flight = 0
        self._peak_in_flight = 0
        self.app: FastAPI = _build_app(self)

    @property
    def calls(self) -> int:
        """How many `POST /predict` requests have arrived since the last `reset()`."""
        with self._counters:
            return self._calls

    @property
    def in_flight(self) -> int:
        """How many `POST /predict` requests are being served right now."""
        with self._counters:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most requests ever served at the same moment since the last `reset()`."""
        with self._counters:
            return self._peak_in_flight

    def stats(self) -> dict[str, Any]:
        """The counters as one consistent snapshot (what `GET /stats` returns)."""
        with self._counters:
            return {
                "model": self.name,
                "calls": self._calls,
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak_in_flight,
            }

    def reset(self) -> None:
        """Zero the counters and close the gate again (if there is one), between tests."""
        with self._counters:
            self._calls = 0
            self._peak_in_flight = self._in_flight
        if self.gate is not None:
            self.gate.clear()

    def open_gate(self) -> None:
        """Let every held request (and every later one) continue."""
        if self.gate is None:
            raise RuntimeError(f"upstream {self.name!r} was made without gated=True")
        self.gate.set()

    def wait_for_in_flight(self, n: int, timeout: float = 5.0) -> bool:
        """Block until `n` requests are in flight at once; False if `timeout` passed first."""
        with self._counters:
            return self._counters.wait_for(lambda: self._in_flight >= n, timeout)

    def wait_for_idle(self, timeout: float = 5.0) -> bool:
        """Block until no request is in flight; False if `timeout` passed first."""
        with self._counters:
            return self._counters.wait_for(lambda: self._in_flight == 0, timeout)

    def answer_body(self, text: str) -> bytes:
        """The bytes of a 200 answer for `text`: `body` if one was given, else the prediction."""
        if self.body is not None:
            return self.body
        return json.dumps(self.prediction(text)).encode()

    def prediction(self, text: str) -> dict[str, Any]:
        """The body this service answers for `text` (when it does not fail)."""
        # A hash, not Python's hash(): the same on every run and every machine.
        digest = hashlib.sha256(f"{self.name}\n{text}".encode()).digest()
        label = LABELS[digest[0] % len(LABELS)]
        fraction = int.from_bytes(digest[1:3]) / 2**16  # in [0, 1)
        return {"model": self.name, "label": label, "score": round(0.5 + fraction / 2, 4)}

    @contextmanager
    def _count_request(self) -> Iterator[None]:
        with self._counters:
            self._calls += 1
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            self._counters.notify_all()
        try:
            yield
        finally:
            with self._counters:
                self._in_flight -= 1
                self._counters.notify_all()

    async def _wait_at_gate(self) -> bool:
        # Poll a threading.Event rather than block on it: the test opens it from
        # another thread, and a blocking wait would freeze this server's event loop.
        if self.gate is None:
            return True
        deadline = time.monotonic() + self.gate_timeout
        while not self.gate.is_set():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def _trickled(self, text: str) -> AsyncIterator[bytes]:
        """The answer of a trickling upstream: a space every TRICKLE_INTERVAL while it waits."""
        # Counted here, not in the route: the request is in flight until the last byte.
        # When the client goes away, Starlette stops this generator, and the count drops.
        with self._count_request():
            gate_deadline = time.monotonic() + self.gate_timeout
            while self.gate is not None and not self.gate.is_set():
                if time.monotonic() > gate_deadline:
                    return  # an incomplete body: the test never opened the gate
                yield b" "  # leading whitespace: the JSON stays valid
                await asyncio.sleep(TRICKLE_INTERVAL)
            deadline = time.monotonic() + self.delay
            while time.monotonic() < deadline:
                yield b" "
                await asyncio.sleep(TRICKLE_INTERVAL)
            yield self.answer_body(text)


async def _sleep_unless_disconnected(request: "Request", seconds: float) -> None:
    """Sleep `seconds`, but stop early once the client has gone (it timed out)."""
    # A hung upstream must not outlive its caller: its request would stay in flight,
    # and the server could only cancel it, noisily, at shutdown.
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if await request.is_disconnected():
            return
        await asyncio.sleep(min(remaining, 0.02))


def _build_app(upstream: Upstream) -> "FastAPI":
    """The FastAPI app of one upstream (imports FastAPI only when one is made)."""
    from fastapi import FastAPI, HTTPException, Request, Response
    from fastapi.responses import StreamingResponse
    from pydantic import BaseModel

    class PredictRequest(BaseModel):
        text: str

    class Prediction(BaseModel):
        model: str
        label: str
        score: float

    app = FastAPI(title=f"Simulated model service {upstream.name!r}")

    @app.post("/predict", response_model=Prediction)
    async def predict(body: PredictRequest, request: Request) -> Response:
        if upstream.trickle:
            trickled = upstream._trickled(body.text)
            return StreamingResponse(trickled, media_type=upstream.media_type)
        with upstream._count_request():
            if not await upstream._wait_at_gate():
                raise HTTPException(503, f"{upstream.name}: the test never opened the gate")
            await _sleep_unless_disconnected(request, upstream.delay)
            if upstream.fail:
                raise HTTPException(upstream.status_code, f"{upstream.name} is unavailable")
            # The bytes as they are: a `body` that is not a prediction must reach the client.
            return Response(upstream.answer_body(body.text), media_type=upstream.media_type)

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return upstream.stats()

    return app


def make_upstream(
    name: str,
    *,
    delay: float = 0.1,
    fail: bool = False,
    status_code: int = 503,
    gated: bool = False,
    gate_timeout: float = 10.0,
    body: bytes | None = None,
    media_type: str = "application/json",
    trickle: bool = False,
) -> Upstream:
    """Make a simulated model service called `name`.

    Its app answers `POST /predict` with `{"text": str}` in and
    `{"model": name, "label": str, "score": float}` out, the same for the same text
    (see `Upstream.prediction`), after `await asyncio.sleep(delay)`. With `fail=True`
    it answers `status_code` and `{"detail": "<name> is unavailable"}` instead, after
    the same delay. With `gated=True` each request first waits until the test calls
    `open_gate()` (answering 503 after `gate_timeout` seconds), so a test can hold
    requests until it has seen `wait_for_in_flight(n)`. `GET /stats` returns the
    counters.

    A bad upstream: with `body`, a 200 answer carries those bytes (of type `media_type`)
    instead of the prediction, such as an HTML page or JSON without `score`. With
    `trickle=True` it answers 200 at once and spends its wait (the gate, then `delay`)
    sending one space every TRICKLE_INTERVAL seconds before the body: leading whitespace
    keeps the JSON valid, and no read waits longer than 50 ms, so only a deadline on the
    whole call cuts it off. A trickling upstream never fails; once its headers are sent,
    its status is 200.
    """
    return Upstream(
        name,
        delay=delay,
        fail=fail,
        status_code=status_code,
        gated=gated,
        gate_timeout=gate_timeout,
        body=body,
        media_type=media_type,
        trickle=trickle,
    )


@contextmanager
def running_upstreams(*upstreams: Upstream, **config: Any) -> Iterator[dict[str, str]]:
    """Serve each upstream with uvicorn on loopback; yield `{name: base_url}`.

    Every server stops when the block ends. Requests still running then (a hung
    upstream) are cancelled after `timeout_graceful_shutdown` seconds (1 unless given).
    Other keyword arguments go to `serve_many_in_threads`.
    """
    names = [upstream.name for upstream in upstreams]
    if len(set(names)) != len(names):
        raise ValueError(f"upstream names must be unique, got {names}")
    config.setdefault("timeout_graceful_shutdown", 1)
    with serve_many_in_threads([upstream.app for upstream in upstreams], **config) as urls:
        yield dict(zip(names, urls, strict=True))
