"""What every grading child needs before it starts: imported once, in the warm process.

On Linux and macOS the grader forks each step's child from one warm process
(`autograder.zygote`), which calls `warm` for what a child needs before forking it, and
for the rest of `MODULES` while it waits. Importing pytest, FastAPI, scikit-learn and
skops costs about two seconds of CPU; paid there once, a child starts in milliseconds.
The course's models are parsed there too, and built first if the cache is empty.

Nothing here imports a learner's code: the warm process is the course's alone. Any
failure is swallowed, because a child that lacks a warm import just imports it itself.
"""

from __future__ import annotations

import contextlib
import importlib
import sys

# What the graded tests, the course's services and pytest's start-up import.
MODULES = (
    "pytest",
    "_pytest.assertion.rewrite",
    "_pytest.mark.expression",
    "_pytest.monkeypatch",
    "_pytest.tmpdir",
    "_pytest.python_api",
    "numpy",
    "sklearn.pipeline",
    "sklearn.feature_extraction.text",
    "sklearn.linear_model",
    "sklearn.preprocessing",
    "sklearn.decomposition",
    "sklearn.metrics",
    "sklearn.model_selection",
    "skops.io",
    "pydantic",
    "pydantic_settings",
    "fastapi",
    "fastapi.testclient",
    "fastapi.security",
    "fastapi.sse",
    "fastapi.staticfiles",
    "fastapi.responses",
    "fastapi.openapi.docs",
    "fastapi_offline",
    "starlette.testclient",
    "anyio",
    "anyio._backends._asyncio",  # what the first TestClient or server loads: ~50 ms
    "pydantic.v1",
    "fastapi.telemetry._runtime",
    "httpx",
    "httpx2",
    "httpx_sse",
    "hypothesis",
    "hypothesis.strategies",
    "sqlite3",
    "asyncio",
    "concurrent.futures",
    "autograder.child",
    "autograder.expect",
    "autograder.sse",
    "coursekit.datasets",
    "coursekit.docs",
    "coursekit.embeddings",
    "coursekit.llm",
    "coursekit.models",
    "coursekit.server",
    "coursekit.upstream",
    # The official client step 10 is graded with: about 0.6 s to import.
    "openai",
    "openai.lib.streaming.chat",
    "openai.resources.chat",
    "openai.resources.embeddings",
    "openai.resources.models",
    # Step 13's rate limit and telemetry.
    "limits",
    "limits.strategies",
    "limits.storage",
    "opentelemetry.sdk.metrics",
    "opentelemetry.sdk.trace",
    # Step 14's queue (and the capstone's): what its API side imports, and what its
    # forked workers start with.
    "redis",
    "celery",
    "celery.result",
    "celery.apps.worker",
    "celery.worker.consumer",
    "celery.concurrency.thread",
    "kombu.transport.redis",
    "coursekit.redis_server",
)
# What a real uvicorn server imports when it starts (coursekit.server imports it late).
SERVER_MODULES = (
    "uvicorn",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.lifespan.on",
    "uvicorn.loops.asyncio",
    "uvicorn.loops.auto",
)


def warm(name: str) -> None:
    """Import module `name` and what it implies; never raise (a child imports it anyway).

    After `coursekit.server`, a real server's modules; after `coursekit.models` (or
    `coursekit.embeddings`, which uses it), the course's models are parsed (and built
    first, by this process only, if missing).
    """
    if name in sys.modules and name not in IMPLIES:
        return
    with contextlib.suppress(Exception):
        importlib.import_module(name)
    if name == "pytest":
        with contextlib.suppress(Exception):  # pytest's own plugins, which every run loads
            from _pytest.config import default_plugins

            for plugin in default_plugins:
                importlib.import_module(f"_pytest.{plugin}")
    if name == "coursekit.server":
        for server_module in SERVER_MODULES:
            with contextlib.suppress(Exception):
                importlib.import_module(server_module)
    if name in MODEL_USERS and not _models_parsed:
        _parse_models()


# What loads the course's models: coursekit.embeddings loads the embedder on first use.
MODEL_USERS = ("coursekit.models", "coursekit.embeddings")
IMPLIES = ("pytest", "coursekit.server", *MODEL_USERS)
_models_parsed = False


def _parse_models() -> None:
    global _models_parsed
    _models_parsed = True
    with contextlib.suppress(Exception):
        from coursekit.models import available_models, load_model, reset_load_counts

        for model in available_models():
            load_model(model)
        reset_load_counts()  # a child's counts start at zero, as in a fresh process


def share_tls_context() -> None:
    """Build httpcore2's default TLS context once in this process, not once per client.

    Each new httpx2 client loads the system's CA certificates into a new context: 20 to
    50 ms of CPU. The apps the tests start open a client at each start-up (step 06's,
    in every test), and so do many tests. An `ssl.SSLContext` is made to be shared, and
    nothing the course's apps or tests do changes it. Never raises.
    """
    with contextlib.suppress(Exception):
        import functools

        import httpcore2

        original = httpcore2.default_ssl_context
        if not hasattr(original, "cache_info"):
            httpcore2.default_ssl_context = functools.cache(original)
