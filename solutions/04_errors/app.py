"""Step 04, solved: the step-03 service, hardened so every bad input gets a clear 4xx.

Routes, schemas and model code are step 03's. This step adds one error body for every
failure, a request body size limit, and a 503 instead of a crash when a model is missing.
"""

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from schemas import (
    MAX_BATCH_SIZE,
    TicketPrediction,
    TicketRequest,
    WineBatch,
    WineBatchPrediction,
    WineFeatures,
    WinePrediction,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from coursekit.datasets import WINE_FEATURES
from coursekit.docs import add_offline_docs
from coursekit.models import LoadedModel, load_model

logger = logging.getLogger(__name__)

# --- The schemas of step 03's routes ------------------------------------------------------

ModelName = Literal["tickets", "wine"]
MODEL_NAMES: tuple[ModelName, ...] = ("tickets", "wine")


class TicketBatch(BaseModel):
    """Several tickets to route in one request."""

    instances: list[TicketRequest] = Field(min_length=1, max_length=MAX_BATCH_SIZE)


class TicketBatchPrediction(BaseModel):
    """One prediction per ticket, in the order of the request's instances."""

    predictions: list[TicketPrediction]


class Metrics(BaseModel):
    """How the model scored on the held-out part of its data."""

    accuracy: float
    macro_f1: float
    n_train: int
    n_test: int


class ModelInfo(BaseModel):
    """What a client may know about a served model: never where its file lives."""

    name: ModelName
    version: str
    task: str
    classes: list[str]
    metrics: Metrics
    trained_at: datetime
    library_versions: dict[str, str]


class Health(BaseModel):
    """Whether the process answers, and which models it has loaded."""

    status: Literal["ok"]
    models: dict[ModelName, bool]


# --- The one error body of this service ---------------------------------------------------


class ErrorDetail(BaseModel):
    """One problem with the request: where it is, what is wrong, and its kind."""

    loc: list[str | int]
    message: str
    type: str


class ErrorBody(BaseModel):
    """What went wrong: a stable `code` for programs, a `message` for people."""

    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx this service answers has this body."""

    error: ErrorBody


# The `code` of an HTTP error, by status. A client branches on the code, never on the message.
ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "content_too_large",
}
MAX_BODY_SIZE = 1_048_576  # bytes (1 MiB): a full batch of 100 long tickets fits easily


class ModelNotLoadedError(Exception):
    """A route needs a model that is not loaded (start-up has not run, or the load failed)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


# --- Loading the models once, for the life of the app ------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # A model that fails to load must not take the whole service down: the other model
    # still serves, /health says which one is missing, and its routes answer 503.
    app.state.models = {}
    for name in MODEL_NAMES:
        try:
            app.state.models[name] = load_model(name)
        except Exception:
            logger.exception("The %s model failed to load; its routes will answer 503", name)
    yield
    app.state.models = {}


app = FastAPI(
    title="Ticket and wine predictions",
    version="0.4.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
    # Starlette stops reading a body past this size: a client cannot make us buffer 2 GB.
    max_body_size=MAX_BODY_SIZE,
)
add_offline_docs(app)

# What /openapi.json (and so /docs) says the prediction routes may answer besides 200.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "The request body is over the size limit"},
    422: {"model": ErrorResponse, "description": "The request is not valid"},
    503: {"model": ErrorResponse, "description": "The model is not loaded"},
}


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Sequence[ErrorDetail] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A response with this service's one error body."""
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=list(details)))
    return JSONResponse(status_code=status_code, content=body.model_dump(), headers=headers)


@app.exception_handler(RequestValidationError)
async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Only where, what and which kind: echoing the refused `input` would send the client's
    # data back (and a NaN in it cannot even be written as JSON).
    details = [
        ErrorDetail(loc=list(error["loc"]), message=error["msg"], type=error["type"])
        for error in exc.errors()
    ]
    count = len(details)
    message = f"The request is not valid: {count} problem{'s' if count != 1 else ''}."
    return error_response(422, "validation_error", message, details)


# Starlette's HTTPException, not FastAPI's subclass: Starlette itself raises it for an
# unknown path (404), a wrong method (405) and a body over the size limit (413).
@app.exception_handler(StarletteHTTPException)
async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = ERROR_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


@app.exception_handler(ModelNotLoadedError)
async def model_not_loaded_handler(request: Request, exc: ModelNotLoadedError) -> JSONResponse:
    message = f"The {exc.name} model is not loaded. Try again later."
    # Retry-After: a 503 is temporary, and this tells a well-behaved client when to retry.
    return error_response(503, "model_not_loaded", message, headers={"Retry-After": "30"})


def get_model(request: Request, name: ModelName) -> LoadedModel:
    """The model `name`, as the lifespan loaded it; ModelNotLoadedError if it is not loaded."""
    # Before start-up app.state has no `models` at all; after a failed load, no entry.
    models = getattr(request.app.state, "models", {})
    if name not in models:
        raise ModelNotLoadedError(name)
    return models[name]


# --- Turning model output into answers ----------------------------------------------------


def predict_many(model: LoadedModel, inputs: Sequence[Any]) -> list[tuple[str, float]]:
    """One (label, confidence) per input, in order, from a single call to the model."""
    probabilities = model.pipeline.predict_proba(inputs)
    # Column i of predict_proba is the probability of model.classes[i]: the label is the
    # most probable class, and the confidence is that class's probability.
    return [(model.classes[int(row.argmax())], float(row.max())) for row in probabilities]


def wine_row(wine: WineFeatures) -> list[float]:
    """The 13 features as the model expects them: a row in WINE_FEATURES order."""
    return [getattr(wine, feature) for feature in WINE_FEATURES]


def model_info(model: LoadedModel) -> ModelInfo:
    """The public part of a model's metadata: validation drops what ModelInfo does not declare."""
    return ModelInfo.model_validate(model.metadata)


# --- Routes -------------------------------------------------------------------------------


@app.get("/health")
def health(request: Request) -> Health:
    # Before start-up (or after shut-down) app.state has no models yet.
    loaded = getattr(request.app.state, "models", {})
    return Health(status="ok", models={name: name in loaded for name in MODEL_NAMES})


# Plain `def`, not `async def`: inference is CPU-bound, and FastAPI runs a `def` route in
# its threadpool, so the event loop stays free to accept other requests meanwhile.
@app.post("/tickets/predict", responses=ERROR_RESPONSES)
def predict_ticket(ticket: TicketRequest, request: Request) -> TicketPrediction:
    [(label, confidence)] = predict_many(get_model(request, "tickets"), [ticket.text])
    return TicketPrediction(label=label, confidence=confidence)


@app.post("/tickets/predict/batch", responses=ERROR_RESPONSES)
def predict_ticket_batch(batch: TicketBatch, request: Request) -> TicketBatchPrediction:
    texts = [ticket.text for ticket in batch.instances]
    results = predict_many(get_model(request, "tickets"), texts)
    return TicketBatchPrediction(
        predictions=[TicketPrediction(label=label, confidence=p) for label, p in results]
    )


@app.post("/wine/predict", responses=ERROR_RESPONSES)
def predict_wine(wine: WineFeatures, request: Request) -> WinePrediction:
    [(label, confidence)] = predict_many(get_model(request, "wine"), [wine_row(wine)])
    return WinePrediction(label=label, confidence=confidence)


@app.post("/wine/predict/batch", responses=ERROR_RESPONSES)
def predict_wine_batch(batch: WineBatch, request: Request) -> WineBatchPrediction:
    rows = [wine_row(wine) for wine in batch.instances]
    results = predict_many(get_model(request, "wine"), rows)
    return WineBatchPrediction(
        predictions=[WinePrediction(label=label, confidence=p) for label, p in results]
    )


@app.get("/models")
def list_models(request: Request) -> list[ModelInfo]:
    return [model_info(get_model(request, name)) for name in MODEL_NAMES]


@app.get("/models/{name}")
def get_model_info(name: ModelName, request: Request) -> ModelInfo:
    return model_info(get_model(request, name))
