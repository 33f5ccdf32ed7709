"""Step 11, solved: a ticket-routing API whose model serves concurrent requests in batches.

Each request puts its ticket on a bounded queue with a future and awaits that future. One
batching task, started in lifespan, takes what is queued (up to `max_batch_size`,
waiting at most `max_wait` for more), calls the model ONCE for the whole batch in a
worker thread, and hands each future its own answer.
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
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        # Bounded: under overload, requests are refused at once instead of piling up.
        self.queue: asyncio.Queue[Pending] = asyncio.Queue(maxsize=max_queue)
        self.task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """How many requests wait in the queue (not those the model is working on)."""
        return self.queue.qsize()

    async def start(self) -> None:
        """Start the one batching task."""
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the batching task and wait until it has ended."""
        if self.task is not None:
            self.task.cancel()
            # Awaiting the cancelled task is what makes it end before stop() returns.
            with suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def submit(self, item: Any) -> Any:
        """Queue `item` and wait for its answer; QueueFullError if the queue is full."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise QueueFullError from None
        return await future

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if batch:
                await self._run_batch(batch)

    async def _collect(self) -> list[Pending]:
        """Wait for a first request, then take more, up to max_batch_size or max_wait."""
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch_size:
            try:
                # Whatever is queued already joins at once, even with max_wait = 0.
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            try:
                async with asyncio.timeout_at(deadline):
                    batch.append(await self.queue.get())
            except TimeoutError:
                break
        # A client that left while queued (its future cancelled) costs the model nothing.
        return [(item, future) for item, future in batch if not future.cancelled()]

    async def _run_batch(self, batch: list[Pending]) -> None:
        items = [item for item, _ in batch]
        try:
            # In a worker thread: the model call blocks, and the event loop must stay free
            # to accept (and queue) the next requests meanwhile.
            results = await asyncio.to_thread(self.predict, items)
        except Exception as error:
            # Only this batch fails; the task goes on with the next one.
            for _, future in batch:
                if not future.done():
                    future.set_exception(BatchFailedError(repr(error)))
            return
        for (_, future), result in zip(batch, results, strict=True):
            # A client may have left while the model ran: its future is cancelled.
            if not future.done():
                future.set_result(result)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    model = load_model("tickets")
    batcher = MicroBatcher(
        partial(predict_tickets, model),
        max_batch_size=settings.max_batch_size,
        max_wait=settings.max_wait,
        max_queue=settings.max_queue,
    )
    await batcher.start()
    app.state.batcher = batcher
    try:
        yield
    finally:
        await batcher.stop()


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


# `async def`: the route only waits (for its future), and the batching task that answers
# it runs on this same event loop.
@app.post("/tickets/predict", responses=ERROR_RESPONSES)
async def predict_ticket(ticket: TicketRequest, request: Request) -> TicketPrediction:
    batcher: MicroBatcher = request.app.state.batcher
    return await batcher.submit(ticket.text)
