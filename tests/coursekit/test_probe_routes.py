"""The routes a test adds to an app for itself only (coursekit/probe_routes.py)."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from coursekit import probe_routes


def an_app_with_a_limiter(permits: int) -> tuple[FastAPI, types.ModuleType]:
    """An app whose get_limiter gives one shared semaphore, and its module."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, asyncio.Semaphore]]:
        yield {"limiter": asyncio.Semaphore(permits)}

    def get_limiter(request: Request) -> asyncio.Semaphore:
        return request.state.limiter

    module = types.ModuleType("app")
    module.get_limiter = get_limiter  # type: ignore[attr-defined]
    return FastAPI(lifespan=lifespan), module


@pytest.fixture
def held() -> Iterator[TestClient]:
    app, module = an_app_with_a_limiter(2)
    probe_routes.limiter_state(app, module)
    probe_routes.permit_holder(app, module)
    with TestClient(app) as client:
        yield client


def test_held_permits_are_given_back_when_the_test_lets_go(held: TestClient) -> None:
    assert held.get("/test-only/limiter").json() == {"locked": False}
    assert held.post("/test-only/hold", params={"permits": 2}).json() == {"locked": True}
    assert held.get("/test-only/limiter").json() == {"locked": True}
    assert held.post("/test-only/let-go").json() == {"released": True}
    for _ in range(100):  # the holder gives them back on the app's loop, a moment later
        if held.get("/test-only/limiter").json() == {"locked": False}:
            break
    else:
        raise AssertionError("the permits were not given back")


def test_holding_some_permits_leaves_the_others(held: TestClient) -> None:
    assert held.post("/test-only/hold", params={"permits": 1}).json() == {"locked": False}
    held.post("/test-only/let-go")


def test_an_app_without_get_limiter_is_told_what_it_lacks() -> None:
    app, module = an_app_with_a_limiter(1)
    del module.get_limiter  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match="must define get_limiter"):
        probe_routes.limiter_state(app, module)


def test_the_http_error_routes_raise_what_a_route_might() -> None:
    app = FastAPI()
    probe_routes.http_errors(app, types.ModuleType("app"))
    with TestClient(app) as client:
        conflict = client.post("/test-only/conflict")
        assert (conflict.status_code, conflict.headers["retry-after"]) == (409, "5")
        assert client.get("/test-only/missing").status_code == 404


def test_model_calls_are_recorded_until_the_clean_up() -> None:
    from coursekit.models import load_model, record_batches

    app = FastAPI()
    cleanup = probe_routes.model_calls(app, types.ModuleType("app"))
    try:
        load_model("tickets").pipeline.predict_proba(["one", "two", "three"])
        with TestClient(app) as client:
            assert client.get("/test-only/model-calls").json() == {"tickets": [3]}
    finally:
        cleanup()
    with record_batches():  # the recording ended: a test's own may begin
        pass


def test_model_loads_count_from_the_set_up() -> None:
    from coursekit.models import load_model

    load_model("wine")  # before the set-up: not counted
    app = FastAPI()
    probe_routes.model_loads(app, types.ModuleType("app"))
    load_model("wine")
    with TestClient(app) as client:
        loads = client.get("/test-only/model-loads").json()
    assert (loads["wine"], loads["tickets"]) == (1, 0)
