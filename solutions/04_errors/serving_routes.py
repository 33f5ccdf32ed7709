"""Given, from step 03: its routes, on an APIRouter that app.py includes. You do not edit
this file. They find their model with your `get_model` (registry.py) and document your
`ERROR_RESPONSES` (errors.py) in /openapi.json.
"""

from errors import ERROR_RESPONSES
from fastapi import APIRouter, Request
from registry import get_model
from schemas import (
    TicketPrediction,
    TicketRequest,
    WineBatch,
    WineBatchPrediction,
    WineFeatures,
    WinePrediction,
)
from serving import (
    MODEL_NAMES,
    Health,
    ModelInfo,
    ModelName,
    TicketBatch,
    TicketBatchPrediction,
    model_info,
    predict_many,
    wine_row,
)

router = APIRouter()


@router.get("/health")
def health(request: Request) -> Health:
    # Before start-up (or after shut-down) app.state has no models yet.
    loaded = getattr(request.app.state, "models", {})
    return Health(status="ok", models={name: name in loaded for name in MODEL_NAMES})


# Plain `def`, not `async def`: inference is CPU-bound, and FastAPI runs a `def` route in
# its threadpool, so the event loop stays free to accept other requests meanwhile.
@router.post("/tickets/predict", responses=ERROR_RESPONSES)
def predict_ticket(ticket: TicketRequest, request: Request) -> TicketPrediction:
    [(label, confidence)] = predict_many(get_model(request, "tickets"), [ticket.text])
    return TicketPrediction(label=label, confidence=confidence)


@router.post("/tickets/predict/batch", responses=ERROR_RESPONSES)
def predict_ticket_batch(batch: TicketBatch, request: Request) -> TicketBatchPrediction:
    texts = [ticket.text for ticket in batch.instances]
    results = predict_many(get_model(request, "tickets"), texts)
    return TicketBatchPrediction(
        predictions=[TicketPrediction(label=label, confidence=p) for label, p in results]
    )


@router.post("/wine/predict", responses=ERROR_RESPONSES)
def predict_wine(wine: WineFeatures, request: Request) -> WinePrediction:
    [(label, confidence)] = predict_many(get_model(request, "wine"), [wine_row(wine)])
    return WinePrediction(label=label, confidence=confidence)


@router.post("/wine/predict/batch", responses=ERROR_RESPONSES)
def predict_wine_batch(batch: WineBatch, request: Request) -> WineBatchPrediction:
    rows = [wine_row(wine) for wine in batch.instances]
    results = predict_many(get_model(request, "wine"), rows)
    return WineBatchPrediction(
        predictions=[WinePrediction(label=label, confidence=p) for label, p in results]
    )


@router.get("/models")
def list_models(request: Request) -> list[ModelInfo]:
    return [model_info(get_model(request, name)) for name in MODEL_NAMES]


@router.get("/models/{name}")
def get_model_info(name: ModelName, request: Request) -> ModelInfo:
    return model_info(get_model(request, name))
