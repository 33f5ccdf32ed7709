"""Step 15: your service. Read README.md (the product brief and its contract) first.

This is a skeleton: `create_app()` and the module-level `app` must stay (the tests build
your service with `create_app()`, and uvicorn serves `app:app`), and so must the routes'
paths. The modules beside it (chat, batching, jobs, security) are a suggested layout: keep
them, merge them into this file, or split them further. The given `contract.py` holds the
settings, the bounds, the schemas, the error body and the tools.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import batching
import chat
import jobs
from contract import MAX_BODY_SIZE, Health, Settings, add_error_handlers
from fastapi import FastAPI
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from coursekit.docs import add_offline_docs


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # TODO: load what each worker process holds (the ticket model, the chat model, the
    # tools, a Valkey client, the batcher as app.state.batcher) and close it at the end
    # (lesson: "One process or two: where state must live").
    yield


async def _live() -> Health:
    # TODO: lesson "Readiness, request ids and metrics".
    raise NotImplementedError


async def _ready() -> Health:
    # TODO: 200 while the Valkey server answers, 503 otherwise (lesson: "Readiness,
    # request ids and metrics").
    raise NotImplementedError


def create_app(
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The service, configured from CAPSTONE_* variables; telemetry to these providers."""
    app = FastAPI(
        title="Capstone: one AI microservice",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        max_body_size=MAX_BODY_SIZE,
    )
    app.state.settings = Settings()
    add_offline_docs(app)  # /docs and /redoc without a CDN
    add_error_handlers(app)
    app.add_api_route("/health/live", _live, methods=["GET"])
    app.add_api_route("/health/ready", _ready, methods=["GET"])
    for module in (chat, batching, jobs):
        app.include_router(module.router)
    # TODO: the middleware and the telemetry of README.md's contract (lesson: "Readiness,
    # request ids and metrics").
    return app


app = create_app()
