"""Step 11: a ticket-routing API whose model serves concurrent requests in batches.

Read README.md in this folder first: it states what the batcher and the route must do.
Grade your work with `pytest exercises/11_micro_batching`.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from service import (
    ERROR_RESPONSES,
    MAX_BODY_SIZE,
    BatchFailedError,
    QueueFullError,
    TicketPrediction,
    TicketRequest,
    add_error_handlers,
    get_settings,
    predict_tickets,
)

from coursekit.docs import add_offline_docs
from coursekit.models import load_model

# What waits on the queue: the request's input, and the future its answer goes into.
Pending = tuple[Any, asyncio.Future[Any]]


class MicroBatcher:
    """Collect concurrent requests into batches: one call of `predict` per batch."""

    def __init__(
        self,
        predict: Callable[[list[Any]], list[Any]],
        *,
        max_batch_size: int,
        max_wait: float,
        max_queue: int,
    ) -> None:
        # TODO: keep predict, max_batch_size and max_wait, and make the queue: an
        # asyncio.Queue that holds at most max_queue pending requests (lesson: "A bounded
        # queue and a future per request"). No task yet: start() makes it.
        raise NotImplementedError

    @property
    def queued(self) -> int:
        """How many requests wait in the queue (not those the model is working on)."""
        # TODO: the number of requests waiting in the queue right now.
        raise NotImplementedError

    async def start(self) -> None:
        """Start the one batching task."""
        # TODO: start ONE task that runs the batching loop for as long as the batcher
        # runs, and keep a reference to it (lesson: "One batching task, started in lifespan").
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop the batching task and wait until it has ended."""
        # TODO: cancel the task, then wait for it to end (it ends by raising
        # CancelledError, which stop() must not let out). Lesson: "Stopping cleanly".
        raise NotImplementedError

    async def submit(self, item: Any) -> Any:
        """Queue `item` and wait for its answer; QueueFullError if the queue is full."""
        # TODO: make a future, put (item, future) on the queue WITHOUT waiting for room
        # (a full queue raises QueueFullError, from service.py), then await the future.
        # Lesson: "A bounded queue and a future per request".
        raise NotImplementedError

    # Your batching loop goes here, in methods of your own (lesson: "Collecting a batch",
    # "One model call per batch, off the event loop", "When the model fails"):
    # - wait for a first request; then take every request already queued, and wait at
    #   most max_wait seconds (counted from the first) for more, up to max_batch_size;
    # - leave out a request whose client has gone (its future is cancelled);
    # - call self.predict ONCE with the batch's items, in a worker thread;
    # - give each future its own result, in order (skip a future that is already done);
    # - if the call raises, set BatchFailedError on every future of the batch, and go
    #   on with the next batch.


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # TODO: read the settings (get_settings()), load the model with load_model("tickets"),
    # make a MicroBatcher whose predict is partial(predict_tickets, model), start it and
    # keep it in app.state.batcher; yield; at shutdown, stop it (also when the app fails).
    # Lesson: "One batching task, started in lifespan".
    raise NotImplementedError
    yield  # unreachable; it makes this function the generator asynccontextmanager needs


app = FastAPI(
    title="Batched ticket routing",
    version="0.11.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
    # Starlette stops reading a body past this size: one ticket, not a document.
    max_body_size=MAX_BODY_SIZE,
)
add_offline_docs(app)
add_error_handlers(app)


@app.post("/tickets/predict", responses=ERROR_RESPONSES)
async def predict_ticket(ticket: TicketRequest, request: Request) -> TicketPrediction:
    # TODO: submit the ticket's text to the batcher in request.app.state.batcher and
    # return what it answers. Lesson: "The route: await your answer".
    raise NotImplementedError
