"""Step 05, solved: the routes this step writes, on an APIRouter that app.py includes.

Each asks for what it needs through the dependencies of deps.py.
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
    model = loaded_model(registry, "tickets")
    [(label, confidence)], latency_ms = timed_predictions(model, [ticket.text])
    prediction = TicketPrediction(label=label, confidence=confidence)
    log_prediction(connection, "tickets", ticket.model_dump(), prediction.model_dump(), latency_ms)
    return prediction


@router.post("/wine/predict", responses=ERROR_RESPONSES)
def predict_wine(
    wine: WineFeatures, registry: RegistryDep, connection: ConnectionDep
) -> WinePrediction:
    model = loaded_model(registry, "wine")
    [(label, confidence)], latency_ms = timed_predictions(model, [wine_row(wine)])
    prediction = WinePrediction(label=label, confidence=confidence)
    log_prediction(connection, "wine", wine.model_dump(), prediction.model_dump(), latency_ms)
    return prediction


@router.get(
    "/models/{name}",
    responses={404: {"model": ErrorResponse, "description": "The registry has no such model"}},
)
def get_model_info(model: ModelDep) -> ModelInfo:
    return model_info(model)


@router.post(
    "/embed",
    dependencies=[Depends(require_api_key)],
    responses={**KEY_ERROR_RESPONSES, 400: ERROR_RESPONSES[400], 413: ERROR_RESPONSES[413]},
)
def embed_texts(to_embed: EmbedRequest, embedder: EmbedderDep) -> EmbedResponse:
    return EmbedResponse(
        dimension=EMBEDDING_DIMENSION, embeddings=embed(to_embed.texts, model=embedder)
    )


# The log holds what customers wrote: only holders of an API key may read it.
@router.get("/predictions", dependencies=[Depends(require_api_key)], responses=KEY_ERROR_RESPONSES)
def list_predictions(
    connection: ConnectionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_LIMIT)] = 20,
) -> list[LoggedPrediction]:
    return read_predictions(connection, limit)
