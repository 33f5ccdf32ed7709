"""Step 15, solved: one AI microservice, run as several worker processes.

Each worker process holds what is cheap to hold twice (the models, a Valkey client);
everything two workers must agree on (sessions, rate-limit counters, jobs, idempotency
keys) lives in the Valkey server.
"""

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import batching
import chat
import jobs
from contract import (
    MAX_BODY_SIZE,
    ErrorBody,
    Health,
    ServiceError,
    Settings,
    add_error_handlers,
    build_tools,
)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from redis.asyncio import Redis
from security import RateLimiter, RequestIdMiddleware

from coursekit.docs import add_offline_docs
from coursekit.llm import get_model
from coursekit.models import load_model


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    model = await asyncio.to_thread(load_model, "tickets")
    app.state.redis = Redis.from_url(settings.redis_url)
    app.state.rate_limiter = RateLimiter(settings.redis_url)
    app.state.chat_model = get_model()
    app.state.tools = build_tools(model)
    app.state.batcher = batching.MicroBatcher(model, settings.batch_size, settings.batch_wait_ms)
    app.state.batcher.start()
    try:
        yield
    finally:
        await app.state.batcher.stop()
        await app.state.redis.aclose()


# What /openapi.json (and so /docs) says each router's routes may answer besides success.
_DESCRIPTIONS = {
    400: "The body could not be decoded",
    401: "The API key is missing or unknown",
    404: "No such session or job of this key's holder",
    409: "This Idempotency-Key belongs to another batch",
    413: "The request body is over the size limit",
    422: "The request is not valid",
    429: "This key's rate limit is used up: see Retry-After",
    503: "Too many predictions wait: see Retry-After",
}
CHAT_ERRORS = (400, 401, 404, 413, 422, 429)
PREDICT_ERRORS = (400, 401, 413, 422, 429, 503)
JOB_ERRORS = (400, 401, 404, 409, 413, 422, 429)
_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Health, "description": "The Valkey server does not answer"}
}


def _documented(statuses: tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses
    }
    if 413 in documented:
        # A streamed body over the limit gets the error body; a declared one, Starlette's
        # own plain text (its middleware replaces whatever the handler answered).
        documented[413]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    return documented


def _is_probe(scope: MutableMapping[str, Any]) -> bool:
    """The health probes: telemetry leaves them out (they would drown the metrics)."""
    return str(scope.get("path", "")).startswith("/health/")


async def _live() -> Health:
    return Health(status="ok")


async def _ready(request: Request) -> Any:
    """Ready when the Valkey server answers: without it, no session, job or limit works."""
    try:
        await asyncio.wait_for(request.app.state.redis.ping(), 2)
    except Exception:
        return JSONResponse(Health(status="unavailable").model_dump(), status_code=503)
    return Health(status="ok")


async def _queue_full(request: Request, exc: Exception) -> JSONResponse:
    error = ServiceError(
        503, "overloaded", "Too many predictions wait.", headers={"Retry-After": "1"}
    )
    return await _as_error(request, error)


async def _as_error(request: Request, error: ServiceError) -> JSONResponse:
    handler = request.app.exception_handlers[ServiceError]
    return await handler(request, error)


def create_app(
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The service, configured from CAPSTONE_* variables; telemetry to these providers."""
    app = FastAPI(
        title="Capstone: one AI microservice",
        version="0.15.0",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        max_body_size=MAX_BODY_SIZE,
        telemetry={
            "meter_provider": meter_provider,
            "tracer_provider": tracer_provider,
            "exclude": _is_probe,
        },
    )
    app.state.settings = Settings()
    add_offline_docs(app)
    add_error_handlers(app)
    app.add_exception_handler(asyncio.QueueFull, _queue_full)
    app.add_api_route("/health/live", _live, methods=["GET"])
    app.add_api_route("/health/ready", _ready, methods=["GET"], responses=_NOT_READY)
    for module, statuses in ((chat, CHAT_ERRORS), (batching, PREDICT_ERRORS), (jobs, JOB_ERRORS)):
        app.include_router(module.router, responses=_documented(statuses))
    app.add_middleware(RequestIdMiddleware)
    return app


app = create_app()
