"""Step 03, solved: the ticket and wine prediction API, served by the trained models.

The request and response schemas of step 02 are unchanged (schemas.py); this file adds
the schemas of the new routes, loads both models once at start-up, and serves them.
"""

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
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

from coursekit.datasets import WINE_FEATURES
from coursekit.docs import BODY_ERRORS, add_offline_docs
from coursekit.models import LoadedModel, load_model

# --- The schemas of the routes this step adds -------------------------------------------

ModelName = Literal["tickets", "wine"]
MODEL_NAMES: tuple[ModelName, ...] = ("tickets", "wine")


class TicketBatch(BaseModel):
    """Several tickets to route in one request."""

    instances: Annotated[list[TicketRequest], Field(min_length=1, max_length=MAX_BATCH_SIZE)]


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


# --- Loading the models once, for the life of the app ------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs once, before the first request: every request then shares the loaded models.
    app.state.models = {name: load_model(name) for name in MODEL_NAMES}
    yield
    app.state.models = {}


# Step 02 capped bodies at 64 KiB; a batch of 100 tickets of up to 2000 characters each
# (about 200 KB) needs more. 1 MiB holds it easily, and no client can make us buffer more.
MAX_BODY_SIZE = 1_048_576  # bytes

app = FastAPI(
    title="Ticket and wine predictions",
    version="0.3.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
    # Past this many bytes, reading stops and the client gets a 413 (Content Too Large).
    max_body_size=MAX_BODY_SIZE,
)
add_offline_docs(app)


def _json_safe(value: Any) -> Any:
    """`value` with every NaN and infinity replaced by its name ("nan", "inf", "-inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


@app.exception_handler(RequestValidationError)
async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Kept from step 02: FastAPI's own handler echoes each refused `input`, and JSON cannot
    # carry NaN or infinity, so a request holding one would get a 500 instead of its 422.
    return JSONResponse(
        status_code=422, content={"detail": _json_safe(jsonable_encoder(exc.errors()))}
    )


def get_model(request: Request, name: ModelName) -> LoadedModel:
    """The model `name`, as the lifespan loaded it."""
    return request.app.state.models[name]


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
@app.post("/tickets/predict", responses=BODY_ERRORS)
def predict_ticket(ticket: TicketRequest, request: Request) -> TicketPrediction:
    [(label, confidence)] = predict_many(get_model(request, "tickets"), [ticket.text])
    return TicketPrediction(label=label, confidence=confidence)


@app.post("/tickets/predict/batch", responses=BODY_ERRORS)
def predict_ticket_batch(batch: TicketBatch, request: Request) -> TicketBatchPrediction:
    texts = [ticket.text for ticket in batch.instances]
    results = predict_many(get_model(request, "tickets"), texts)
    return TicketBatchPrediction(
        predictions=[TicketPrediction(label=label, confidence=p) for label, p in results]
    )


@app.post("/wine/predict", responses=BODY_ERRORS)
def predict_wine(wine: WineFeatures, request: Request) -> WinePrediction:
    [(label, confidence)] = predict_many(get_model(request, "wine"), [wine_row(wine)])
    return WinePrediction(label=label, confidence=confidence)


@app.post("/wine/predict/batch", responses=BODY_ERRORS)
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
