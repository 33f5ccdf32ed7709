"""Step 05, yours: the routes this step writes, on an APIRouter that app.py includes.

Read README.md in this folder first. Each route asks for what it needs through the
dependencies of deps.py; base_routes.py (given) shows the batch routes written this way.
"""

from typing import Annotated

from deps import ConnectionDep, EmbedderDep, ModelDep, RegistryDep, require_api_key
from error_handling import ERROR_RESPONSES, KEY_ERROR_RESPONSES, ErrorResponse
from fastapi import APIRouter, Depends, Query
from model_registry import loaded_model, model_info, timed_predictions, wine_row
from prediction_log import log_prediction, read_predictions
from schemas import TicketPrediction, TicketRequest, WineFeatures, WinePrediction
from service_schemas import MAX_LOG_LIMIT, EmbedRequest, EmbedResponse, LoggedPrediction, ModelInfo

from coursekit.embeddings import EMBEDDING_DIMENSION, embed

router = APIRouter()


# Plain `def`: inference is CPU-bound, and FastAPI runs a `def` route in its threadpool.
@router.post("/tickets/predict", responses=ERROR_RESPONSES)
def predict_ticket(
    ticket: TicketRequest, registry: RegistryDep, connection: ConnectionDep
) -> TicketPrediction:
    # TODO: the prediction of the registry's "tickets" model (a 503 when it is not
    # loaded), as in step 03, logged in the prediction log with how long the model took.
    # Lessons: "A model registry as a dependency" and "A prediction log".
    raise NotImplementedError


@router.post("/wine/predict", responses=ERROR_RESPONSES)
def predict_wine(
    wine: WineFeatures, registry: RegistryDep, connection: ConnectionDep
) -> WinePrediction:
    # TODO: as predict_ticket, with the registry's "wine" model.
    raise NotImplementedError


@router.get(
    "/models/{name}",
    responses={404: {"model": ErrorResponse, "description": "The registry has no such model"}},
)
def get_model_info(model: ModelDep) -> ModelInfo:
    # TODO: the public metadata of the model the path names (ModelDep has found it, or
    # answered 404 before this runs). Lesson: "A model registry as a dependency".
    raise NotImplementedError


# TODO: only a request with a right API key may reach this route. Lesson: "API keys
# with HTTPBearer".
@router.post(
    "/embed",
    responses={**KEY_ERROR_RESPONSES, 400: ERROR_RESPONSES[400], 413: ERROR_RESPONSES[413]},
)
def embed_texts(to_embed: EmbedRequest, embedder: EmbedderDep) -> EmbedResponse:
    # TODO: one vector per text, in order, unrounded, from the embedder this route is
    # given (not coursekit's shared default). Lesson: "API keys with HTTPBearer".
    raise NotImplementedError


# TODO: the log holds what customers wrote: an API key is required here too.
@router.get("/predictions", responses=KEY_ERROR_RESPONSES)
def list_predictions(
    connection: ConnectionDep,
    limit: int = 20,
) -> list[LoggedPrediction]:
    # TODO: the `limit` latest rows of the log; `limit` may be 1 to MAX_LOG_LIMIT, and
    # FastAPI must refuse any other value with a 422 before this runs. Lesson: "Reading
    # the log".
    raise NotImplementedError
