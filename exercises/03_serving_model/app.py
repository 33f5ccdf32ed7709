"""Step 03: the ticket and wine prediction API, served by the trained models.

Read README.md in this folder first: it states what each route must do.
Grade your work with `pytest exercises/03_serving_model`.

GIVEN, ready-made: schemas.py (step 02's schemas, unchanged), the schemas of the new
routes below, the app itself and its 422 handler. YOURS: every `TODO:`.
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
    # TODO: load each model of MODEL_NAMES once per start of the app, before it serves
    # its first request, and keep them where get_model below finds them; let them go at
    # shut-down (good practice, not graded). Nothing may load at import or in a route
    # ("Loading once in lifespan").
    yield


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
    # TODO: ask the model for the class probabilities of all inputs in one call, then give
    # each input the most probable class and that probability, unrounded, as a plain
    # float ("Confidence: the probability of the label").
    raise NotImplementedError


def wine_row(wine: WineFeatures) -> list[float]:
    """The 13 features as the model expects them: a row in WINE_FEATURES order."""
    # TODO: the 13 values of `wine`, in the order of the model's columns, WINE_FEATURES
    # ("Single and batch prediction").
    raise NotImplementedError


def model_info(model: LoadedModel) -> ModelInfo:
    """The public part of a model's metadata: validation drops what ModelInfo does not declare."""
    # TODO: the ModelInfo of this model, from the metadata saved with it, never typed in
    # by hand ("Model metadata").
    raise NotImplementedError


# --- Routes -------------------------------------------------------------------------------


@app.get("/health")
def health(request: Request) -> Health:
    # TODO: status "ok" and, for each name in MODEL_NAMES, whether that model is loaded;
    # it must answer before start-up too, when nothing is ("A health check that tells the
    # truth").
    raise NotImplementedError


# Keep the routes plain `def`: inference is CPU-bound, and FastAPI runs a `def` route in
# its threadpool, so the event loop stays free to accept other requests meanwhile.
@app.post("/tickets/predict", responses=BODY_ERRORS)
def predict_ticket(ticket: TicketRequest, request: Request) -> TicketPrediction:
    # TODO: the tickets model's prediction for this one text ("Single and batch prediction").
    raise NotImplementedError


@app.post("/tickets/predict/batch", responses=BODY_ERRORS)
def predict_ticket_batch(batch: TicketBatch, request: Request) -> TicketBatchPrediction:
    # TODO: one prediction per instance, in their order, from a single call to the model
    # ("Single and batch prediction").
    raise NotImplementedError


@app.post("/wine/predict", responses=BODY_ERRORS)
def predict_wine(wine: WineFeatures, request: Request) -> WinePrediction:
    # TODO: the wine model's prediction for this one wine ("Single and batch prediction").
    raise NotImplementedError


@app.post("/wine/predict/batch", responses=BODY_ERRORS)
def predict_wine_batch(batch: WineBatch, request: Request) -> WineBatchPrediction:
    # TODO: one prediction per wine, in their order, from a single call to the model
    # ("Single and batch prediction").
    raise NotImplementedError


@app.get("/models")
def list_models(request: Request) -> list[ModelInfo]:
    # TODO: the metadata of every model of MODEL_NAMES, as GET /models/{name} gives each
    # ("Model metadata").
    raise NotImplementedError


@app.get("/models/{name}")
def get_model_info(name: ModelName, request: Request) -> ModelInfo:
    # TODO: the metadata of the model `name` ("Model metadata"). Its type, ModelName,
    # already makes FastAPI answer 422 to any other name.
    raise NotImplementedError
