"""Step 05: the ticket and wine service, wired together with dependency injection.

Read README.md in this folder first: it states what each part must do.
Grade your work with `pytest exercises/05_dependency_injection`.

GIVEN, ready-made: schemas.py (step 02's schemas, unchanged), the schemas below, the
`Annotated` dependency aliases, step 04's hardening (solved: the error body and its
handlers, MAX_BODY_SIZE, ModelNotLoadedError, load_registry, loaded_model,
ERROR_RESPONSES), the helpers from step 03, and the routes this step only rewires
(health, the batch routes, GET /models).
YOURS: every `TODO:`.
"""

import json
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
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
from coursekit.embeddings import EMBEDDING_DIMENSION, embed
from coursekit.models import LoadedModel, load_model

logger = logging.getLogger(__name__)

# --- Settings, read from the environment -------------------------------------------------


class Settings(BaseSettings):
    """The service's configuration, read from PREDICTOR_* environment variables.

    For example: PREDICTOR_API_KEYS='["key-1", "key-2"]' PREDICTOR_DATABASE_PATH=log.sqlite3
    """

    # TODO: read these fields from environment variables named PREDICTOR_<FIELD> (such as
    # PREDICTOR_DATABASE_PATH): set model_config = SettingsConfigDict(env_prefix=...).

    # Several keys, so a key can be rotated: add the new one, move clients, drop the old.
    # SecretStr keeps them out of logs and tracebacks (it prints as '**********').
    api_keys: list[SecretStr] = []
    database_path: Path = Path("predictions.sqlite3")


def get_settings() -> Settings:
    # TODO: return Settings(), built once and then cached: decorate this function with
    # @lru_cache (from functools). Never build Settings at the top of this file: the
    # environment must be read when the app first needs it, and the tests replace this
    # very function in app.dependency_overrides.
    raise NotImplementedError


SettingsDep = Annotated[Settings, Depends(get_settings)]

# --- The schemas of the routes (step 03's, then this step's) -----------------------------

ModelName = Literal["tickets", "wine"]
MODEL_NAMES: tuple[ModelName, ...] = ("tickets", "wine")
MAX_EMBED_TEXTS = 64
MAX_LOG_LIMIT = 100


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


class EmbedRequest(BaseModel):
    """Texts to embed, 1 to MAX_EMBED_TEXTS of them."""

    texts: list[str] = Field(min_length=1, max_length=MAX_EMBED_TEXTS)


class EmbedResponse(BaseModel):
    """One vector of `dimension` numbers per text, in the order of the texts."""

    dimension: int
    embeddings: list[list[float]]


class LoggedPrediction(BaseModel):
    """One row of the prediction log."""

    id: int
    model: str
    input: dict[str, Any]
    output: dict[str, Any]
    latency_ms: float


# --- The one error body of this service (step 04's) ---------------------------------------


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
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "content_too_large",
}
MAX_BODY_SIZE = 1_048_576  # bytes (1 MiB): a full batch of 100 long tickets fits easily


class ModelNotLoadedError(Exception):
    """A route needs a model that the registry does not hold (its load failed at start-up)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


# --- Loading the models once, for the life of the app ------------------------------------


def load_registry() -> dict[str, LoadedModel]:
    """Every model in MODEL_NAMES by name, loaded from disk; one that fails is left out."""
    # Step 04's rule: a model that fails to load must not take the whole service down. The
    # other model still serves, /health says which one is missing, and its routes answer 503.
    registry: dict[str, LoadedModel] = {}
    for name in MODEL_NAMES:
        try:
            registry[name] = load_model(name)
        except Exception:
            logger.exception("The %s model failed to load; its routes will answer 503", name)
    return registry


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # TODO: before the `yield`, load each model once: app.state.registry is the registry,
    # the dict {name: LoadedModel} that load_registry() returns (given, above: it loads
    # every name in MODEL_NAMES and leaves out one that fails, as in step 04), and
    # app.state.embedder = load_model("embedder"). After the `yield` (shut-down), set
    # app.state.registry back to {}. Load nowhere else.
    yield


app = FastAPI(
    title="Ticket and wine predictions",
    version="0.5.0",
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
# The same for the routes behind an API key, which use no model from the registry.
KEY_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "The API key is missing or wrong"},
    422: ERROR_RESPONSES[422],
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
# unknown path (404), a wrong method (405) and a body over the size limit (413). The
# HTTPExceptions of this step's dependencies (the 401, the 404 of an unknown model) come
# here too, and keep their headers: the 401's WWW-Authenticate among them.
@app.exception_handler(StarletteHTTPException)
async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = ERROR_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


@app.exception_handler(ModelNotLoadedError)
async def model_not_loaded_handler(request: Request, exc: ModelNotLoadedError) -> JSONResponse:
    message = f"The {exc.name} model is not loaded. Try again later."
    # Retry-After: a 503 is temporary, and this tells a well-behaved client when to retry.
    return error_response(503, "model_not_loaded", message, headers={"Retry-After": "30"})


# --- The model registry ---------------------------------------------------------------------


def get_registry(request: Request) -> dict[str, LoadedModel]:
    """Every served model by name, as the lifespan loaded them."""
    # TODO: return the registry the lifespan stored on request.app.state.
    raise NotImplementedError


RegistryDep = Annotated[dict[str, LoadedModel], Depends(get_registry)]


def loaded_model(registry: dict[str, LoadedModel], name: ModelName) -> LoadedModel:
    """The model `name`, for a route that always uses it; ModelNotLoadedError if not loaded."""
    # A 503, not get_model's 404: this service does serve `name`, it is only missing for now.
    if name not in registry:
        raise ModelNotLoadedError(name)
    return registry[name]


def get_model(name: str, registry: RegistryDep) -> LoadedModel:
    """The model the path names: `name` is read from the path of the route that uses this."""
    # TODO: return the model called `name` from the registry. For a name it does not
    # hold, raise HTTPException with status 404 and a `detail` naming the model (step
    # 04's handler answers it in the error body, with the code "not_found").
    raise NotImplementedError


ModelDep = Annotated[LoadedModel, Depends(get_model)]


def get_embedder(request: Request) -> LoadedModel:
    """The text embedder, as the lifespan loaded it."""
    # TODO: return the embedder the lifespan stored on request.app.state.
    raise NotImplementedError


EmbedderDep = Annotated[LoadedModel, Depends(get_embedder)]

# --- API keys -------------------------------------------------------------------------------

# auto_error=False: a missing header reaches require_api_key as None, so a missing key and
# a wrong key get the very same 401, written in one place.
bearer = HTTPBearer(auto_error=False)


def require_api_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    settings: SettingsDep,
) -> None:
    """Let the request through only with `Authorization: Bearer <one of the API keys>`."""
    # TODO: `credentials` is None when the request has no `Authorization: Bearer ...`
    # header; otherwise credentials.credentials is the key it sent. Let the request through
    # (return None) if that key equals one of settings.api_keys (key.get_secret_value()),
    # compared with secrets.compare_digest on bytes (.encode() both sides), never with ==.
    # Otherwise raise HTTPException with status 401, a `detail` and the header
    # {"WWW-Authenticate": "Bearer"}: the same answer for a missing and for a wrong key.
    # (Step 04's handler answers it in the error body and keeps the header.)
    raise NotImplementedError


# --- The prediction log: one SQLite connection per request ------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    latency_ms REAL NOT NULL
)
"""


def get_connection(settings: SettingsDep) -> Iterator[sqlite3.Connection]:
    """A connection to the log for one request: committed if the route succeeds, always closed."""
    # TODO: open sqlite3.connect(settings.database_path, check_same_thread=False)
    # (FastAPI opens it in one thread and runs a `def` route in another), execute SCHEMA
    # on it, then `yield` it to the route. After the yield, commit: that line is reached
    # only if the route succeeded. Close it in every case: put the yield and the commit
    # in a try block and the close in its `finally`.
    raise NotImplementedError
    yield  # a `yield` makes this a generator: keep one in yours


# scope="function": the code after `yield` runs when the route returns, before the response
# is sent, so a client that has its answer can already read its prediction in the log.
ConnectionDep = Annotated[sqlite3.Connection, Depends(get_connection, scope="function")]


def log_prediction(
    connection: sqlite3.Connection,
    model: str,
    model_input: dict[str, Any],
    model_output: dict[str, Any],
    latency_ms: float,
) -> None:
    """Add one prediction to the log (get_connection commits it)."""
    # TODO: INSERT one row into the predictions table (see SCHEMA): the model's name,
    # model_input and model_output as JSON text (json.dumps), and latency_ms. Use ?
    # placeholders, never an f-string. Do not commit here: get_connection does.
    raise NotImplementedError


def read_predictions(connection: sqlite3.Connection, limit: int) -> list[LoggedPrediction]:
    """The `limit` latest predictions, newest first."""
    # TODO: SELECT the `limit` rows with the highest id (ORDER BY id DESC LIMIT ?) and
    # return one LoggedPrediction per row, its input and output decoded with json.loads.
    raise NotImplementedError


# --- Turning model output into answers ----------------------------------------------------


def predict_many(model: LoadedModel, inputs: Sequence[Any]) -> list[tuple[str, float]]:
    """One (label, confidence) per input, in order, from a single call to the model."""
    probabilities = model.pipeline.predict_proba(inputs)
    # Column i of predict_proba is the probability of model.classes[i].
    return [(model.classes[int(row.argmax())], float(row.max())) for row in probabilities]


def timed_predictions(
    model: LoadedModel, inputs: Sequence[Any]
) -> tuple[list[tuple[str, float]], float]:
    """predict_many's answers, and how long the model took, in milliseconds."""
    started = time.perf_counter()
    results = predict_many(model, inputs)
    return results, (time.perf_counter() - started) * 1000


def wine_row(wine: WineFeatures) -> list[float]:
    """The 13 features as the model expects them: a row in WINE_FEATURES order."""
    return [getattr(wine, feature) for feature in WINE_FEATURES]


def model_info(model: LoadedModel) -> ModelInfo:
    """The public part of a model's metadata: validation drops what ModelInfo does not declare."""
    return ModelInfo.model_validate(model.metadata)


# --- Routes -------------------------------------------------------------------------------


@app.get("/health")
def health(request: Request) -> Health:
    # Before start-up (or after shut-down) app.state has no registry yet.
    loaded = getattr(request.app.state, "registry", {})
    return Health(status="ok", models={name: name in loaded for name in MODEL_NAMES})


# Plain `def`: inference is CPU-bound, and FastAPI runs a `def` route in its threadpool.
@app.post("/tickets/predict", responses=ERROR_RESPONSES)
def predict_ticket(
    ticket: TicketRequest, registry: RegistryDep, connection: ConnectionDep
) -> TicketPrediction:
    # TODO: take the model with loaded_model(registry, "tickets") (a 503 if it is not
    # loaded), call timed_predictions with it and a list of one text; build the
    # TicketPrediction, log it with log_prediction(connection, "tickets",
    # ticket.model_dump(), prediction.model_dump(), latency_ms), and return it.
    raise NotImplementedError


@app.post("/tickets/predict/batch", responses=ERROR_RESPONSES)
def predict_ticket_batch(
    batch: TicketBatch, registry: RegistryDep, connection: ConnectionDep
) -> TicketBatchPrediction:
    texts = [ticket.text for ticket in batch.instances]
    results, latency_ms = timed_predictions(loaded_model(registry, "tickets"), texts)
    predictions = [TicketPrediction(label=label, confidence=p) for label, p in results]
    for ticket, prediction in zip(batch.instances, predictions, strict=True):
        log_prediction(
            connection, "tickets", ticket.model_dump(), prediction.model_dump(), latency_ms
        )
    return TicketBatchPrediction(predictions=predictions)


@app.post("/wine/predict", responses=ERROR_RESPONSES)
def predict_wine(
    wine: WineFeatures, registry: RegistryDep, connection: ConnectionDep
) -> WinePrediction:
    # TODO: as predict_ticket, with loaded_model(registry, "wine"), a list of one row
    # (wine_row(wine)) and "wine" as the model's name in the log.
    raise NotImplementedError


@app.post("/wine/predict/batch", responses=ERROR_RESPONSES)
def predict_wine_batch(
    batch: WineBatch, registry: RegistryDep, connection: ConnectionDep
) -> WineBatchPrediction:
    rows = [wine_row(wine) for wine in batch.instances]
    results, latency_ms = timed_predictions(loaded_model(registry, "wine"), rows)
    predictions = [WinePrediction(label=label, confidence=p) for label, p in results]
    for wine, prediction in zip(batch.instances, predictions, strict=True):
        log_prediction(connection, "wine", wine.model_dump(), prediction.model_dump(), latency_ms)
    return WineBatchPrediction(predictions=predictions)


@app.get("/models")
def list_models(registry: RegistryDep) -> list[ModelInfo]:
    return [model_info(model) for model in registry.values()]


@app.get(
    "/models/{name}",
    responses={404: {"model": ErrorResponse, "description": "The registry has no such model"}},
)
def get_model_info(model: ModelDep) -> ModelInfo:
    # TODO: return model_info(model). ModelDep runs get_model before this function, so a
    # name the registry does not hold never gets here.
    raise NotImplementedError


# TODO: protect this route with the API key: add dependencies=[Depends(require_api_key)]
# to the decorator (require_api_key returns nothing; it only refuses).
@app.post("/embed", responses={**KEY_ERROR_RESPONSES, 413: ERROR_RESPONSES[413]})
def embed_texts(body: EmbedRequest, embedder: EmbedderDep) -> EmbedResponse:
    # TODO: return an EmbedResponse with dimension EMBEDDING_DIMENSION and the vectors
    # embed(body.texts, model=embedder): one per text, in order, not rounded.
    raise NotImplementedError


# TODO: the log holds what customers wrote: protect this route with the API key too.
@app.get("/predictions", responses=KEY_ERROR_RESPONSES)
def list_predictions(
    connection: ConnectionDep,
    limit: int = 20,
) -> list[LoggedPrediction]:
    # TODO: accept a limit from 1 to MAX_LOG_LIMIT only: declare the parameter as
    # Annotated[int, Query(ge=1, le=MAX_LOG_LIMIT)] = 20. Return read_predictions(...).
    raise NotImplementedError
