"""Step 13, solved: the ticket service hardened for production.

A pure-ASGI middleware gives every request an id and writes one JSON log line for it;
CORS lets only the configured origins in; the model loads in the background, so
/health/live answers at once and /health/ready says 503 until the model is loaded and
the database answers; FastAPI's own OpenTelemetry gets the providers it is given;
predictions are bounded per client (a rate limit) and in total (a concurrency limit).
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
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER.lower().encode():
                incoming = value.decode("latin-1")
                break
        request_id = incoming if is_valid_request_id(incoming) else uuid.uuid4().hex
        # Routes and handlers can read it as request.state.request_id.
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # what the client gets if the app fails before it answers
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            # Every message goes on at once: a stream's events reach the client as they come.
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            line = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                "request_id": request_id,
            }
            access_log.info(json.dumps(line))


class RateLimit:
    """A per-key moving-window rate limit (the `limits` library, in-memory storage)."""

    def __init__(self, rate: str) -> None:
        self.item: RateLimitItem = parse(rate)
        # In memory: each worker process counts on its own (the lesson says what that costs).
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, key: str) -> None:
        """Count one request for `key`; RateLimitedError if its limit is used up."""
        if self.limiter.hit(self.item, key):
            return
        stats = self.limiter.get_window_stats(self.item, key)
        # Whole seconds, rounded up, and at least 1: "0" would invite an instant retry.
        raise RateLimitedError(retry_after=max(1, math.ceil(stats.reset_time - time.time())))


class ConcurrencyLimit:
    """At most `limit` holders at once; one more is refused at once, never queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the `with` block; OverloadedError if none is free."""
        # No await between the check and the increment: on one event loop, no other
        # request can slip in between.
        if self.in_flight >= self.limit:
            raise OverloadedError
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


def rate_limit(request: Request, api_key: ApiKeyHeader = None) -> None:
    """Count this request against its client's limit: its API key, else its address."""
    client = request.client.host if request.client is not None else "unknown"
    key = f"key:{api_key}" if api_key is not None else f"address:{client}"
    request.app.state.rate_limit.hit(key)


async def concurrency_slot(request: Request) -> AsyncIterator[None]:
    """Hold one of the app's prediction slots while the request is served."""
    async with request.app.state.concurrency.slot():
        yield


async def _load(app: FastAPI) -> None:
    # In a worker thread: loading blocks, and the event loop must answer probes meanwhile.
    app.state.model = await asyncio.to_thread(load_model, "tickets")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.model = None
    # Loading runs beside the server, not before it: uvicorn serves (and /health/live
    # answers) only once start-up is over, and a slow model must not look like a dead pod.
    loading = asyncio.create_task(_load(app))
    try:
        yield
    finally:
        # A shutdown while the model still loads must not leave the task behind.
        loading.cancel()
        with suppress(asyncio.CancelledError):
            await loading
        app.state.model = None


def is_probe(scope: MutableMapping[str, Any]) -> bool:
    """True for the health probes, which telemetry leaves out."""
    # Probes come every few seconds from the orchestrator: they would drown the metrics.
    return str(scope.get("path", "")).startswith("/health/")


router = APIRouter()


@router.get("/health/live")
async def live() -> Health:
    """The process serves: nothing else is checked."""
    return Health(status="ok")


@router.get("/health/ready", responses=READY_RESPONSES)
def ready(request: Request) -> Any:
    """Ready when the model is loaded and the database answers; 503 until then."""
    if request.app.state.model is None:
        return JSONResponse(status_code=503, content=Health(status="loading").model_dump())
    if not check_database(request.app.state.settings.database_path):
        return JSONResponse(status_code=503, content=Health(status="unavailable").model_dump())
    return Health(status="ok")


@router.post(
    "/tickets/predict",
    responses=PREDICT_RESPONSES,
    # In this order: a client over its rate limit never takes one of the slots. The
    # slot's scope is "function": it is given back as soon as the route has returned,
    # not only after the answer has been sent.
    dependencies=[Depends(rate_limit), Depends(concurrency_slot, scope="function")],
)
def predict(ticket: TicketRequest, request: Request) -> TicketPrediction:
    model = request.app.state.model
    if model is None:
        raise NotReadyError
    return predict_ticket(model, ticket.text)


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
        telemetry={
            "meter_provider": meter_provider,
            "tracer_provider": tracer_provider,
            "exclude": is_probe,
        },
    )
    app.state.settings = settings
    app.state.model = None
    app.state.rate_limit = RateLimit(settings.rate_limit)
    app.state.concurrency = ConcurrencyLimit(settings.max_in_flight)
    add_offline_docs(app)
    add_error_handlers(app)
    app.include_router(router)
    app.include_router(stream_router)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", "X-API-Key", REQUEST_ID_HEADER],
        # A browser script sees only the headers listed here.
        expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
    )
    # Added last, so it is outermost: every answer, a CORS refusal too, gets an id and a line.
    app.add_middleware(RequestIdMiddleware)
    return app


app = create_app()
