"""Set-ups a test applies to the app before it starts, for itself only (the grader's
`app_server(..., setup=["coursekit.app_setups:NAME"])`).

Each function takes the app and its module. Most add routes under /test-only/ that raise
what a route of the app might raise, or that report, over HTTP, what a test cannot see
from outside (is the semaphore fully taken? how often was a model loaded?); some swap a
dependency for fake models made here. The test's verdict stays on its side: these only
answer. A function may return a clean-up, called once the app has
stopped where the test's process goes on (a learner's run serves the app in it).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' parameter types, which
# are made at run time from the app's own dependency, from their real annotations.
import asyncio
import contextlib
import importlib
import json
import os
import sqlite3
from collections.abc import Callable
from types import ModuleType
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException

from coursekit import fake_models, models

HOLD_AT_MOST = 5.0  # seconds the held permits stay taken if the test never lets go


def http_errors(app: FastAPI, module: ModuleType) -> None:
    """Step 04: POST /test-only/conflict raises a 409 with a Retry-After header, GET
    /test-only/missing a 404, each an HTTPException as a route of the app might raise."""

    def conflict() -> None:
        raise HTTPException(409, "This ticket is already being routed.", {"Retry-After": "5"})

    def missing() -> None:
        raise HTTPException(404, "No ticket has this id.")

    app.add_api_route("/test-only/conflict", conflict, methods=["POST"])
    app.add_api_route("/test-only/missing", missing, methods=["GET"])


def _limiter_dependency(module: ModuleType) -> Any:
    get_limiter = getattr(module, "get_limiter", None)
    if get_limiter is None:
        raise AssertionError("app.py must define get_limiter (a dependency the tests use).")
    return Annotated[Any, Depends(get_limiter)]


def limiter_state(app: FastAPI, module: ModuleType) -> None:
    """Step 06: GET /test-only/limiter answers {"locked": ...}, whether the semaphore the
    app's get_limiter gives has no permit left."""
    Limiter = _limiter_dependency(module)

    async def state(limiter: Limiter) -> dict[str, bool]:
        return {"locked": limiter.locked()}

    app.add_api_route("/test-only/limiter", state, methods=["GET"])


def permit_holder(app: FastAPI, module: ModuleType) -> None:
    """Step 06: POST /test-only/hold?permits=N takes N permits of the semaphore the app's
    get_limiter gives and answers {"locked": ...} once it holds them; it gives them back
    on POST /test-only/let-go, or after HOLD_AT_MOST seconds."""
    Limiter = _limiter_dependency(module)
    let_go = asyncio.Event()
    holders: list[asyncio.Task[None]] = []  # referenced, so a holder is not collected

    async def hold(limiter: Limiter, permits: int) -> dict[str, bool]:
        for _ in range(permits):
            await limiter.acquire()

        async def give_back() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(let_go.wait(), HOLD_AT_MOST)
            for _ in range(permits):
                limiter.release()

        holders.append(asyncio.create_task(give_back()))
        return {"locked": limiter.locked()}

    async def release() -> dict[str, bool]:
        let_go.set()
        return {"released": True}

    app.add_api_route("/test-only/hold", hold, methods=["POST"])
    app.add_api_route("/test-only/let-go", release, methods=["POST"])


def model_loads(app: FastAPI, module: ModuleType) -> None:
    """Steps 03 to 05: GET /test-only/model-loads answers how many times `load_model`
    loaded each model ({"tickets": 1, "wine": 1, ...}) since the app was set up, before its
    start-up ran."""
    models.reset_load_counts()

    def loads() -> dict[str, int]:
        return {name: models.load_count(name) for name in models.available_models()}

    app.add_api_route("/test-only/model-loads", loads, methods=["GET"])


def model_calls(app: FastAPI, module: ModuleType) -> Callable[[], None]:
    """Steps 03 to 05: GET /test-only/model-calls answers the rows each call of each model
    received ({"tickets": [1, 8], ...}), for the models loaded from set-up on
    (`coursekit.models.record_batches`)."""
    recording = models.record_batches()
    batches = recording.__enter__()

    def calls() -> dict[str, list[int]]:
        return {name: list(rows) for name, rows in batches.items()}

    app.add_api_route("/test-only/model-calls", calls, methods=["GET"])
    return lambda: recording.__exit__(None, None, None)


def _dependency(module_name: str, name: str) -> Any:
    """The step's dependency `name` in its module `module_name`, which a set-up replaces."""
    dependency = getattr(importlib.import_module(module_name), name, None)
    if dependency is None:
        raise AssertionError(
            f"{module_name}.py must define {name} (a dependency the tests replace)."
        )
    return dependency


def fake_registry(app: FastAPI, module: ModuleType) -> None:
    """Step 05: the app's get_registry (deps.py) gives fake tickets and wine models
    (`coursekit.fake_models`); GET /test-only/fake-model-calls answers, per model, whether
    each of its calls ran on the event loop ({"tickets": [false], ...})."""
    fakes = {name: fake_models.fake_model(name) for name in fake_models.ANSWERS}
    registry = {name: model for name, (model, _) in fakes.items()}
    app.dependency_overrides[_dependency("deps", "get_registry")] = lambda: registry

    def calls() -> dict[str, list[bool]]:
        return {name: list(pipeline.on_the_loop) for name, (_, pipeline) in fakes.items()}

    app.add_api_route("/test-only/fake-model-calls", calls, methods=["GET"])


def _registry_of(app: FastAPI, names: tuple[str, ...]) -> None:
    registry = {name: models.load_model(name) for name in names}
    app.dependency_overrides[_dependency("deps", "get_registry")] = lambda: registry


def registry_without_tickets(app: FastAPI, module: ModuleType) -> None:
    """Step 05: the app's get_registry gives the wine model only."""
    _registry_of(app, ("wine",))


def registry_without_wine(app: FastAPI, module: ModuleType) -> None:
    """Step 05: the app's get_registry gives the tickets model only."""
    _registry_of(app, ("tickets",))


def fake_embedder(app: FastAPI, module: ModuleType) -> None:
    """Step 05: the app's get_embedder (deps.py) gives an embedder whose every vector is
    fake_models.EMBEDDED in each dimension."""
    embedder = fake_models.fake_embedder()
    app.dependency_overrides[_dependency("deps", "get_embedder")] = lambda: embedder


def connection_probe(app: FastAPI, module: ModuleType) -> None:
    """Step 05: two routes that take the connection the app's get_connection (deps.py)
    gives and write a row of the log with it, GET /test-only/connection (which answers)
    and GET /test-only/failure (which then raises a 409); GET /test-only/connections
    answers, for the connections they received, how many and how many distinct there were,
    and which are still open ({"received": 3, "distinct": 3, "open": [false, ...]})."""
    Connection = Annotated[sqlite3.Connection, Depends(_dependency("deps", "get_connection"))]
    received: list[sqlite3.Connection] = []

    def write(connection: sqlite3.Connection, model: str) -> None:
        received.append(connection)
        connection.execute(
            "INSERT INTO predictions (model, input, output, latency_ms) VALUES (?, '{}', '{}', 0)",
            (model,),
        )

    def succeed(connection: Connection) -> dict[str, int]:
        write(connection, "test-succeeded")
        return {"one": connection.execute("SELECT 1").fetchone()[0]}

    def fail(connection: Connection) -> None:
        write(connection, "test-failed")
        raise HTTPException(status_code=409, detail="the route failed on purpose")

    def still_open(connection: sqlite3.Connection) -> bool:
        try:
            connection.execute("SELECT 1")
        except sqlite3.ProgrammingError:  # closed
            return False
        return True

    def connections() -> dict[str, Any]:
        return {
            "received": len(received),
            "distinct": len({id(connection) for connection in received}),
            "open": [still_open(connection) for connection in received],
        }

    app.add_api_route("/test-only/connection", succeed, methods=["GET"])
    app.add_api_route("/test-only/failure", fail, methods=["GET"])
    app.add_api_route("/test-only/connections", connections, methods=["GET"])


AFTER_IMPORT_ENV = "COURSE_SET_AFTER_IMPORT"  # a JSON object: variables set once imported


def environment_after_import(app: FastAPI, module: ModuleType) -> Callable[[], None]:
    """Step 05: set the environment variables that AFTER_IMPORT_ENV names (a JSON object
    of names and values) once the app is imported, before it starts, as an operator who
    changed them after an import would; the clean-up puts them back."""
    wanted = json.loads(os.environ.get(AFTER_IMPORT_ENV, "{}"))
    before = {name: os.environ.get(name) for name in wanted}
    os.environ.update({str(name): str(value) for name, value in wanted.items()})

    def put_back() -> None:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return put_back


def settings_cache_probe(app: FastAPI, module: ModuleType) -> None:
    """Step 05: GET /test-only/settings-cached?name=N&value=V calls the app's get_settings
    (deps.py), sets the environment variable N to V, calls it again, puts N back, and
    answers {"same": ...}: whether both calls gave the same object."""
    get_settings = _dependency("deps", "get_settings")

    def cached(name: str, value: str) -> dict[str, bool]:
        before = os.environ.get(name)
        first = get_settings()
        os.environ[name] = value
        try:
            return {"same": get_settings() is first}
        finally:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before

    app.add_api_route("/test-only/settings-cached", cached, methods=["GET"])
