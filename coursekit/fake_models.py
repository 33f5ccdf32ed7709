"""Fake models that answer what no real model would, for tests that check an app uses the
models it is given (step 05's registry and embedder, swapped through
`coursekit.app_setups`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from coursekit.embeddings import EMBEDDING_DIMENSION
from coursekit.models import LoadedModel, load_model

VERSION = "9.9.9-fake"  # the metadata version of every fake
ANSWERS = {"tickets": ("account", 0.55), "wine": ("class_2", 0.61)}  # label, probability
EMBEDDED = 0.25  # every dimension of every text's fake embedding


def on_an_event_loop() -> bool:
    """Whether the calling thread is running an event loop (an `async def` route's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class FakePipeline:
    """Gives `label` the probability `top` for every input, and notes for each call whether
    it ran on the event loop's thread."""

    def __init__(self, classes: list[str], label: str, top: float) -> None:
        self.classes, self.label, self.top = classes, label, top
        self.on_the_loop: list[bool] = []

    def predict_proba(self, inputs: list[Any]) -> np.ndarray:
        self.on_the_loop.append(on_an_event_loop())
        rest = (1 - self.top) / (len(self.classes) - 1)
        row = [self.top if label == self.label else rest for label in self.classes]
        return np.array([row] * len(inputs))

    def predict(self, inputs: list[Any]) -> np.ndarray:
        self.on_the_loop.append(on_an_event_loop())
        return np.array([self.label] * len(inputs))


class FakeEmbedder:
    """Every text becomes EMBEDDED in each dimension: no real embedding looks like that."""

    def transform(self, texts: list[str]) -> np.ndarray:
        return np.full((len(texts), EMBEDDING_DIMENSION), EMBEDDED)


def fake_model(name: str) -> tuple[LoadedModel, FakePipeline]:
    """The model `name` ("tickets" or "wine") with a FakePipeline answering ANSWERS[name],
    and the real one's metadata but for its version."""
    real = load_model(name)
    pipeline = FakePipeline(real.classes, *ANSWERS[name])
    metadata = {**real.metadata, "version": VERSION}
    model = LoadedModel(name=name, pipeline=pipeline, metadata=metadata, path=Path("fake"))  # type: ignore[arg-type]
    return model, pipeline


def fake_embedder() -> LoadedModel:
    """The embedder with a FakeEmbedder, and the real one's metadata."""
    real = load_model("embedder")
    return LoadedModel(
        name="embedder", pipeline=FakeEmbedder(), metadata=real.metadata, path=Path("fake")
    )  # type: ignore[arg-type]
