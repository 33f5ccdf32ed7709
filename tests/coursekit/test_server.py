"""coursekit.server: uvicorn in a thread, started and stopped quickly and gracefully."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from coursekit.server import serve_app_in_thread, serve_in_thread, serve_many_in_threads


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def test_a_server_answers_then_stops_when_the_block_ends() -> None:
    with serve_in_thread(hello) as url, httpx.Client(base_url=url, timeout=5) as client:
        assert client.get("/").text == "hello"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)


def test_stopping_lets_a_request_in_flight_finish() -> None:
    started, release = threading.Event(), threading.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.005)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    answers: list[str] = []
    with serve_in_thread(slow, lifespan="off", timeout_graceful_shutdown=5) as url:
        caller = threading.Thread(target=lambda: answers.append(httpx.get(url, timeout=5).text))
        caller.start()
        assert started.wait(5)
        # The block ends while the request is in flight: shutdown waits for it.
        threading.Timer(0.05, release.set).start()
    caller.join(5)
    assert answers == ["done"]


def test_servers_stop_in_well_under_uvicorns_tick() -> None:
    # uvicorn alone needs about 0.2 s per stop (a 0.1 s tick, a fixed 0.1 s sleep); ten
    # servers stopped one after another would take 2 s. Loose bound: a busy machine passes.
    import time

    start = time.monotonic()
    for _ in range(10):
        with serve_many_in_threads([hello, hello]) as urls:
            assert len(urls) == 2
    assert time.monotonic() - start < 1.5


def test_an_app_whose_start_up_fails_raises_why() -> None:
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        raise LookupError("no model file")
        yield

    # uvicorn only logs it; serve_app_in_thread raises the lifespan's own exception.
    with (
        pytest.raises(LookupError, match="no model file"),
        serve_app_in_thread(FastAPI(lifespan=lifespan)),
    ):
        pass
    with serve_app_in_thread(hello) as url:  # a start-up that succeeds serves as before
        assert httpx.get(url, timeout=5).text == "hello"
