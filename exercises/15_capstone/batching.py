"""The predict route and its micro-batcher (a suggested module: lay it out as you like)."""

from contract import TicketPrediction, TicketRequest
from fastapi import APIRouter

router = APIRouter()


@router.post("/v1/tickets/predict")
async def predict(ticket: TicketRequest) -> TicketPrediction:
    # TODO: the ticket's prediction through the app's batcher, kept as app.state.batcher
    # with a `queued` count (lesson: "Micro-batching inside each worker").
    raise NotImplementedError
