"""Step 13: the ticket service, hardened for production.

Read README.md in this folder first: it states what each piece must do.
Grade your work with `pytest exercises/13_production`.
"""

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from service import (
    ACCESS_LOGGER,
    MAX_BODY_SIZE,
    PREDICT_RESPONSES,
    READY_RESPONSES,
    REQUEST_ID_HEADER,
    ApiKeyHeader,
    Health,
    NotReadyError,
    OverloadedError,
    RateLimitedError,
    Settings,
    TicketPrediction,
    TicketRequest,
    add_error_handlers,
    check_database,
    is_valid_request_id,
    predict_ticket,
    stream_router,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coursekit.docs import add_offline_docs
from coursekit.models import load_model

access_log = logging.getLogger(ACCESS_LOGGER)


class RequestIdMiddleware:
    """Give each HTTP request an id, send it back, and log one JSON line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # TODO: pass anything but an "http" scope on untouched. For a request: its id is
        # the incoming X-Request-ID if is_valid_request_id() accepts it, else a new one
        # (lesson: "Request ids: a pure ASGI middleware"). Call self.app with a `send` of
        # your own that adds X-Request-ID to the http.response.start message and passes
        # EVERY message on at once (lesson: "Why not BaseHTTPMiddleware"). When the app is
        # done, even if it raised, write one JSON line to access_log: method, path, status,
        # duration_ms, request_id (lesson: "One JSON line per request").
        raise NotImplementedError


class RateLimit:
    """A per-key moving-window rate limit (the `limits` library, in-memory storage)."""

    def __init__(self, rate: str) -> None:
        # TODO: parse `rate` ("60/minute") and make a moving-window limiter over memory
        # storage (lesson: "A per-key rate limit with limits").
        raise NotImplementedError

    def hit(self, key: str) -> None:
        """Count one request for `key`; RateLimitedError if its limit is used up."""
        # TODO: count the hit; if the limit is used up, raise RateLimitedError with the
        # whole seconds (at least 1) until the window lets `key` in again.
        raise NotImplementedError


class ConcurrencyLimit:
    """At most `limit` holders at once; one more is refused at once, never queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the `with` block; OverloadedError if none is free."""
        # TODO: if `limit` slots are taken, raise OverloadedError at once (never wait);
        # else take one for the block and give it back however the block ends (lesson:
        # "Overload: refuse at once, with Retry-After").
        raise NotImplementedError
        yield  # unreachable; it makes this function the generator asynccontextmanager needs


def rate_limit(request: Request, api_key: ApiKeyHeader = None) -> None:
    """Count this request against its client's limit: its API key, else its address."""
    # TODO: hit request.app.state.rate_limit with the caller's key: the X-API-Key value,
    # or, without one, the client's address; keep the two kinds apart.
    raise NotImplementedError


async def concurrency_slot(request: Request) -> AsyncIterator[None]:
    """Hold one of the app's prediction slots while the request is served."""
    # TODO: hold a slot of request.app.state.concurrency around the yield.
    raise NotImplementedError
    yield  # unreachable; it makes this function a generator, as a yield dependency is


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # TODO: start loading the model (load_model("tickets"), in a worker thread) in a task,
    # and yield WITHOUT waiting for it: app.state.model stays None until it is loaded. At
    # shutdown (also when the app fails), cancel that task and await it (lessons:
    # "Liveness and readiness", "Graceful shutdown").
    raise NotImplementedError
    yield  # unreachable; it makes this function the generator asynccontextmanager needs


def is_probe(scope: MutableMapping[str, Any]) -> bool:
    """True for the health probes, which telemetry leaves out."""
    # TODO: True for the paths under /health/ (lesson: "Metrics: FastAPI's built-in
    # OpenTelemetry").
    raise NotImplementedError


router = APIRouter()


@router.get("/health/live")
async def live() -> Health:
    """The process serves: nothing else is checked."""
    # TODO: answer {"status": "ok"}, whatever the model and the database (lesson:
    # "Liveness and readiness").
    raise NotImplementedError


@router.get("/health/ready", responses=READY_RESPONSES)
def ready(request: Request) -> Any:
    """Ready when the model is loaded and the database answers; 503 until then."""
    # TODO: 503 with Health(status="loading") while app.state.model is None, 503 with
    # Health(status="unavailable") if check_database(settings.database_path) is False,
    # else 200 with Health(status="ok").
    raise NotImplementedError


@router.post(
    "/tickets/predict",
    responses=PREDICT_RESPONSES,
    # TODO: add the two dependencies, the rate limit first, then the concurrency slot,
    # given back as soon as the route returns (lesson: "Overload: refuse at once, with
    # Retry-After").
    dependencies=[],
)
def predict(ticket: TicketRequest, request: Request) -> TicketPrediction:
    # TODO: NotReadyError while app.state.model is None; else the model's prediction
    # (predict_ticket, given).
    raise NotImplementedError


def create_app(
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The service, configured from SERVICE_* variables; telemetry goes to these providers."""
    settings = Settings()
    app = FastAPI(
        title="Ticket routing, in production",
        version="0.13.0",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        max_body_size=MAX_BODY_SIZE,
        # TODO: telemetry: the two providers this function receives, and leave out the
        # probes (lesson: "Metrics: FastAPI's built-in OpenTelemetry").
    )
    app.state.settings = settings
    app.state.model = None
    # TODO: keep a RateLimit of settings.rate_limit in app.state.rate_limit and a
    # ConcurrencyLimit of settings.max_in_flight in app.state.concurrency.
    add_offline_docs(app)
    add_error_handlers(app)
    app.include_router(router)
    app.include_router(stream_router)
    # TODO: CORS for settings.cors_origins, exposing X-Request-ID and Retry-After (lesson:
    # "CORS: which browser origins may call you"); then, outermost, RequestIdMiddleware.
    return app


app = create_app()
