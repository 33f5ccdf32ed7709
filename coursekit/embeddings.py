"""Text embeddings for the course's `POST /embed` endpoint, computed locally.

    from coursekit.embeddings import embed

    vectors = embed(["my parcel never arrived", "where is my order?"])

Each text becomes `EMBEDDING_DIMENSION` floats of unit length (or all zeros for a text
with no word the embedder knows), so the dot product of two vectors is their cosine
similarity. The embedder is a TF-IDF + truncated SVD pipeline fitted on the course's
support tickets: small and deterministic, yet similar texts get similar vectors.
"""

from __future__ import annotations

import threading

from coursekit.models import LoadedModel, load_model
from coursekit.training import EMBEDDING_DIMENSION

__all__ = ["EMBEDDING_DIMENSION", "embed", "embedding_model"]

_model: LoadedModel | None = None
_model_lock = threading.Lock()


def embedding_model() -> LoadedModel:
    """The embedder, loaded by the first call and shared by every later one."""
    global _model
    with _model_lock:
        if _model is None:
            _model = load_model("embedder")
        return _model


def embed(texts: list[str], model: LoadedModel | None = None) -> list[list[float]]:
    """Embed each text as a list of `EMBEDDING_DIMENSION` floats of unit length.

    Pass `model` (from `load_model("embedder")`, say in a FastAPI lifespan) to use a
    model you loaded yourself; otherwise the shared `embedding_model()` is used.
    """
    if not texts:
        return []
    model = model or embedding_model()
    vectors = model.pipeline.transform(texts)
    return [[float(value) for value in row] for row in vectors]
