"""Step 06: an ensemble endpoint that asks several model services at once.

Read README.md in this folder first: it states what the endpoint must do. `ensemble.py`
(the settings and the models) is given: read it, do not edit it.
Grade your work with `pytest exercises/06_async_concurrency`.
"""

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx2
from ensemble import (
    ENSEMBLE_RESPONSES,
    MAX_BODY_SIZE,
    EnsembleRequest,
    EnsembleResponse,
    Prediction,
    Settings,
    UpstreamResult,
    current_settings,
    get_settings,
)
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import ValidationError

from coursekit.docs import add_offline_docs


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    # TODO: open ONE httpx2.AsyncClient for the whole app, with the configured timeout
    # (get_settings()), closed at shutdown, and make ONE asyncio.Semaphore of
    # max_in_flight permits. Yield them as {"client": ..., "limiter": ...}: requests
    # then find them on request.state (get_client and get_limiter below).
    # Lesson: "One shared client, opened in lifespan" and "Bounded concurrency with a
    # semaphore".
    raise NotImplementedError
    yield {}  # unreachable; it makes this function the generator asynccontextmanager needs


app = FastAPI(
    title="Ensemble",
    version="1.0.0",
    lifespan=lifespan,
    docs_url=None,
    redoc_url=None,
    max_body_size=MAX_BODY_SIZE,  # a client cannot make us buffer 50 MB (lesson 04)
)
add_offline_docs(app)  # /docs and /redoc without a CDN (see lesson 01)


# `async def`: they only read lifespan state, and a plain `def` dependency costs a trip
# to the threadpool on every request.
async def get_client(request: Request) -> httpx2.AsyncClient:
    return request.state.client


async def get_limiter(request: Request) -> asyncio.Semaphore:
    return request.state.limiter


SettingsDep = Annotated[Settings, Depends(current_settings)]
ClientDep = Annotated[httpx2.AsyncClient, Depends(get_client)]
LimiterDep = Annotated[asyncio.Semaphore, Depends(get_limiter)]


async def ask_upstream(
    client: httpx2.AsyncClient, limiter: asyncio.Semaphore, url: str, text: str, timeout: float
) -> UpstreamResult:
    """One upstream's answer, or an error entry: this function never raises."""
    # TODO: POST {"text": text} to f"{url}/predict" with the shared client, awaited,
    # holding one permit of `limiter` while the call runs, and all of it (the wait for a
    # permit included) within one deadline of `timeout` seconds. Check the status, then
    # read the answer as a `Prediction`. Return the upstream's label and score, or an
    # error entry whose `error` is one of those in README.md's table: "timeout",
    # "HTTP <status>", "unreachable", "invalid answer".
    # Lesson: "Timeouts", "A deadline for the whole call", "When an upstream fails",
    # "When an upstream answers nonsense".
    raise NotImplementedError


def combine(results: list[UpstreamResult]) -> tuple[str, int]:
    """The majority label of the answers and its votes; a tie goes to the higher total score."""
    # TODO: among the entries without an error, the label most of them answered and
    # its number of votes; on a tie in votes, the label whose answers have the higher
    # total score. Lesson: "Combining the answers".
    raise NotImplementedError


@app.post("/ensemble", responses=ENSEMBLE_RESPONSES)
async def ensemble(
    review: EnsembleRequest, settings: SettingsDep, client: ClientDep, limiter: LimiterDep
) -> EnsembleResponse:
    # TODO: ask every upstream of settings.upstream_urls at once (ask_upstream), keeping
    # their results in the order of the URLs. When none answered, answer 502 with a
    # message; otherwise combine the results into the EnsembleResponse.
    # Lesson: "Concurrent calls with asyncio.gather" and "When an upstream fails".
    raise NotImplementedError
