"""`POST /v1/tickets/predict`: one ticket per request, many tickets per model call.

Requests wait in a queue; one task takes what is queued (up to `batch_size`), runs the
model once for all of it in a thread, and gives each request its own row.
"""

import asyncio
from contextlib import suppress
from typing import Annotated

from contract import TicketPrediction, TicketRequest, predict_tickets
from fastapi import APIRouter, Depends, Request
from security import CallerDep

from coursekit.models import LoadedModel

QUEUE_BATCHES = 4  # at most this many batches' worth of tickets wait; one more is a 503


class MicroBatcher:
    """Collects predictions into batches: one model call for each batch."""

    def __init__(self, model: LoadedModel, batch_size: int, wait_ms: float) -> None:
        self.model, self.batch_size, self.wait = model, batch_size, wait_ms / 1000
        self.queue: asyncio.Queue[tuple[str, asyncio.Future[TicketPrediction]]] = asyncio.Queue(
            QUEUE_BATCHES * batch_size  # bounded: under overload a quick 503, not a long wait
        )
        self.task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Requests waiting for a batch (the tests read it)."""
        return self.queue.qsize()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with suppress(asyncio.CancelledError):
                await self.task

    async def predict(self, text: str) -> TicketPrediction:
        future: asyncio.Future[TicketPrediction] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((text, future))  # QueueFull -> 503 (see app.py)
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            deadline = asyncio.get_running_loop().time() + self.wait
            while len(batch) < self.batch_size:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            batch = [(text, future) for text, future in batch if not future.done()]
            if not batch:
                continue
            try:
                answers = await asyncio.to_thread(
                    predict_tickets, self.model, [text for text, _ in batch]
                )
            except Exception as error:  # every request of the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)


def get_batcher(request: Request) -> MicroBatcher:
    return request.app.state.batcher


router = APIRouter()


@router.post("/v1/tickets/predict")
async def predict(
    ticket: TicketRequest,
    _: CallerDep,
    batcher: Annotated[MicroBatcher, Depends(get_batcher)],
) -> TicketPrediction:
    return await batcher.predict(ticket.text)
