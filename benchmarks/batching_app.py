"""The FastAPI app `batching.py` serves: one random forest behind three routes.

`/predict/def` runs the model in the threadpool (a plain `def` route), `/predict/async`
on the event loop (`async def`, no await), `/predict/batched` through step 11's
`MicroBatcher` (imported from solutions/11_micro_batching/app.py): concurrent requests
share model calls. Run it by hand with `uvicorn batching_app:app --app-dir benchmarks`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from batching_model import N_FEATURES, predict_rows, train_forest
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "solutions" / "11_micro_batching"))
from app import MicroBatcher

MAX_BATCH_SIZE = 64
MAX_WAIT = 0.002  # seconds
MAX_QUEUE = 1024


class Wine(BaseModel):
    features: list[float] = Field(min_length=N_FEATURES, max_length=N_FEATURES)


class Prediction(BaseModel):
    label: int
    confidence: float


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.forest = train_forest()
    batcher = MicroBatcher(
        partial(predict_rows, app.state.forest),
        max_batch_size=MAX_BATCH_SIZE,
        max_wait=MAX_WAIT,
        max_queue=MAX_QUEUE,
    )
    await batcher.start()
    app.state.batcher = batcher
    try:
        yield
    finally:
        await batcher.stop()


app = FastAPI(title="batching benchmark", lifespan=lifespan)


@app.post("/predict/def")
def predict_def(wine: Wine, request: Request) -> Prediction:
    [answer] = predict_rows(request.app.state.forest, [wine.features])
    return Prediction(**answer)


@app.post("/predict/async")
async def predict_async(wine: Wine, request: Request) -> Prediction:
    [answer] = predict_rows(request.app.state.forest, [wine.features])  # blocks the loop
    return Prediction(**answer)


@app.post("/predict/batched")
async def predict_batched(wine: Wine, request: Request) -> Prediction:
    answer: dict[str, Any] = await request.app.state.batcher.submit(wine.features)
    return Prediction(**answer)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
