"""The app that `def_vs_async.py` serves: the same CPU-bound inference in four routes.

`/dense/...` runs a small neural network's forward pass with NumPy: two matrix products,
which OpenBLAS computes without holding Python's GIL, as real model inference does.
`/python/...` runs a dense layer written in plain Python, which holds the GIL from start
to end (think of a tokenizer or feature code written in Python). Each comes twice: as an
`async def` route (it runs on the event loop) and as a `def` route (it runs in the
threadpool). `/health` does no work at all, so its latency is the time the event loop
takes to get round to a request.

Run it by hand with `uvicorn def_vs_async_app:app --app-dir benchmarks`.
"""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI

# A fixed, seeded "model": a batch of 512 inputs of 1,024 features, 1,024 -> 3,072 -> 16
# units: about 40 ms of work per request on one core of a recent x86 machine.
rng = np.random.default_rng(0)
INPUTS = rng.standard_normal((512, 1024), dtype=np.float32)
HIDDEN = rng.standard_normal((1024, 3072), dtype=np.float32) / 32
OUTPUT = rng.standard_normal((3072, 16), dtype=np.float32) / 55

# The same kind of layer in plain Python, sized to cost about as much time per request.
PY_INPUTS = INPUTS[:9, :256].tolist()
PY_WEIGHTS = HIDDEN[:256, :256].T.tolist()  # one list per unit: its 256 input weights


def dense_forward() -> int:
    """Score the batch with NumPy; return how many inputs were scored."""
    hidden = np.maximum(INPUTS @ HIDDEN, 0.0)  # BLAS releases the GIL for the product
    return len((hidden @ OUTPUT).argmax(axis=1))


def python_forward() -> int:
    """The same kind of layer in pure Python: every multiply-add holds the GIL."""
    for features in PY_INPUTS:
        [max(0.0, sum(w * x for w, x in zip(unit, features, strict=True))) for unit in PY_WEIGHTS]
    return len(PY_INPUTS)


app = FastAPI(title="def vs async def")


@app.post("/dense/async")
async def dense_async() -> dict[str, int]:
    return {"scored": dense_forward()}  # no await: the event loop waits for it


@app.post("/dense/def")
def dense_def() -> dict[str, int]:
    return {"scored": dense_forward()}  # runs in the threadpool; the loop stays free


@app.post("/python/async")
async def python_async() -> dict[str, int]:
    return {"scored": python_forward()}


@app.post("/python/def")
def python_def() -> dict[str, int]:
    return {"scored": python_forward()}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
