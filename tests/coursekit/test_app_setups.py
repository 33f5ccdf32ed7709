"""The routes a test adds to an app for itself only (coursekit/app_setups.py)."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from coursekit import app_setups


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
    app_setups.limiter_state(app, module)
    app_setups.permit_holder(app, module)
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
        app_setups.limiter_state(app, module)


def test_the_http_error_routes_raise_what_a_route_might() -> None:
    app = FastAPI()
    app_setups.http_errors(app, types.ModuleType("app"))
    with TestClient(app) as client:
        conflict = client.post("/test-only/conflict")
        assert (conflict.status_code, conflict.headers["retry-after"]) == (409, "5")
        assert client.get("/test-only/missing").status_code == 404


def test_model_calls_are_recorded_until_the_clean_up() -> None:
    from coursekit.models import load_model, record_batches

    app = FastAPI()
    cleanup = app_setups.model_calls(app, types.ModuleType("app"))
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
    app_setups.model_loads(app, types.ModuleType("app"))
    load_model("wine")
    with TestClient(app) as client:
        loads = client.get("/test-only/model-loads").json()
    assert (loads["wine"], loads["tickets"]) == (1, 0)


@pytest.fixture
def deps(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A step-05-like deps module, whose dependencies the set-ups replace."""
    module = types.ModuleType("deps")
    module.get_registry = lambda: {}  # type: ignore[attr-defined]
    module.get_embedder = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "deps", module)
    return module


def test_the_fake_registry_replaces_get_registry_and_tells_where_it_ran(deps) -> None:
    from coursekit.fake_models import ANSWERS, VERSION

    app = FastAPI()
    app_setups.fake_registry(app, types.ModuleType("app"))
    registry = app.dependency_overrides[deps.get_registry]()
    tickets = registry["tickets"]
    assert tickets.version == VERSION
    row = tickets.pipeline.predict_proba(["hi"])[0]
    assert tickets.classes[int(row.argmax())] == ANSWERS["tickets"][0]
    assert float(row.max()) == ANSWERS["tickets"][1]

    async def on_the_loop() -> None:
        registry["wine"].pipeline.predict_proba([[0.0]])

    asyncio.run(on_the_loop())
    with TestClient(app) as client:
        assert client.get("/test-only/fake-model-calls").json() == {
            "tickets": [False],
            "wine": [True],
        }


def test_a_registry_without_a_model_holds_the_other_only(deps) -> None:
    app = FastAPI()
    app_setups.registry_without_tickets(app, types.ModuleType("app"))
    assert list(app.dependency_overrides[deps.get_registry]()) == ["wine"]
    app_setups.registry_without_wine(app, types.ModuleType("app"))
    assert list(app.dependency_overrides[deps.get_registry]()) == ["tickets"]


def test_the_fake_embedder_embeds_every_text_alike(deps) -> None:
    from coursekit.embeddings import EMBEDDING_DIMENSION, embed
    from coursekit.fake_models import EMBEDDED

    app = FastAPI()
    app_setups.fake_embedder(app, types.ModuleType("app"))
    embedder = app.dependency_overrides[deps.get_embedder]()
    vectors = embed(["one", "two"], model=embedder)
    assert [list(map(float, v)) for v in vectors] == [[EMBEDDED] * EMBEDDING_DIMENSION] * 2


def test_a_dependency_a_set_up_replaces_must_exist(deps) -> None:
    del deps.get_registry
    with pytest.raises(AssertionError, match=r"deps\.py must define get_registry"):
        app_setups.fake_registry(FastAPI(), types.ModuleType("app"))


def test_the_connection_probe_tells_what_became_of_each_connection(deps, tmp_path) -> None:
    import sqlite3

    database = tmp_path / "log.sqlite3"
    schema = "CREATE TABLE IF NOT EXISTS predictions (model, input, output, latency_ms)"
    kept: list[sqlite3.Connection] = []

    def get_connection() -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(database, check_same_thread=False)
        connection.execute(schema)
        yield connection
        connection.commit()
        if len(kept) == 0:  # the first stays open: the probe must say so
            kept.append(connection)
        else:
            connection.close()

    deps.get_connection = get_connection
    app = FastAPI()
    app_setups.connection_probe(app, types.ModuleType("app"))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/test-only/connection").json() == {"one": 1}
        assert client.get("/test-only/connection").status_code == 200
        assert client.get("/test-only/failure").status_code == 409
        seen = client.get("/test-only/connections").json()
    # The failed request's stays open too: this get_connection has no `finally`.
    assert seen == {"received": 3, "distinct": 3, "open": [True, False, True]}


def test_variables_set_after_the_import_are_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import os

    monkeypatch.setenv(app_setups.AFTER_IMPORT_ENV, json.dumps({"COURSE_A": "1", "COURSE_B": "2"}))
    monkeypatch.setenv("COURSE_A", "before")
    monkeypatch.delenv("COURSE_B", raising=False)
    put_back = app_setups.environment_after_import(FastAPI(), types.ModuleType("app"))
    assert (os.environ["COURSE_A"], os.environ["COURSE_B"]) == ("1", "2")
    put_back()
    assert (os.environ["COURSE_A"], os.environ.get("COURSE_B")) == ("before", None)


@pytest.mark.parametrize("cached", [True, False])
def test_the_settings_probe_tells_a_cached_get_settings(deps, cached: bool) -> None:
    import functools
    import os

    def settings() -> dict[str, str | None]:
        return {"keys": os.environ.get("COURSE_KEYS")}

    deps.get_settings = functools.lru_cache(settings) if cached else settings
    app = FastAPI()
    app_setups.settings_cache_probe(app, types.ModuleType("app"))
    with TestClient(app) as client:
        params = {"name": "COURSE_KEYS", "value": "[]"}
        assert client.get("/test-only/settings-cached", params=params).json() == {"same": cached}
    assert "COURSE_KEYS" not in os.environ
