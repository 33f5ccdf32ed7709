"""Step 06, solved: an ensemble endpoint that asks several model services at once."""

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
    settings = get_settings()
    # One client for the life of the app: its connection pool keeps connections to the
    # upstreams open, so a request does not pay for a new TCP connection per call.
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(settings.timeout)) as client:
        # One semaphore for the whole app, so the bound holds across concurrent requests.
        yield {"client": client, "limiter": asyncio.Semaphore(settings.max_in_flight)}


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
    try:
        # One deadline for everything the call waits on: a permit, the connection, each
        # byte of the answer. httpx2's own timeout bounds each of those waits alone.
        async with asyncio.timeout(timeout), limiter:
            response = await client.post(f"{url}/predict", json={"text": text})
            response.raise_for_status()
        # Inside the guard: a 200 whose body is not a prediction is this upstream's error.
        prediction = Prediction.model_validate_json(response.content)
    # TimeoutException is a TransportError too, so it must be caught first.
    except (TimeoutError, httpx2.TimeoutException):
        return UpstreamResult(upstream=url, error="timeout")
    except httpx2.HTTPStatusError as error:
        return UpstreamResult(upstream=url, error=f"HTTP {error.response.status_code}")
    except httpx2.TransportError:
        return UpstreamResult(upstream=url, error="unreachable")
    except ValidationError:
        return UpstreamResult(upstream=url, error="invalid answer")
    return UpstreamResult(upstream=url, label=prediction.label, score=prediction.score)


def combine(results: list[UpstreamResult]) -> tuple[str, int]:
    """The majority label of the answers and its votes; a tie goes to the higher total score."""
    votes: Counter[str] = Counter()
    total_score: defaultdict[str, float] = defaultdict(float)
    for result in results:
        if result.label is not None and result.score is not None:
            votes[result.label] += 1
            total_score[result.label] += result.score
    label = max(votes, key=lambda candidate: (votes[candidate], total_score[candidate]))
    return label, votes[label]


@app.post("/ensemble", responses=ENSEMBLE_RESPONSES)
async def ensemble(
    review: EnsembleRequest, settings: SettingsDep, client: ClientDep, limiter: LimiterDep
) -> EnsembleResponse:
    # gather starts every call before awaiting any, and returns the results in the
    # order of its arguments, whatever order the upstreams answer in.
    results = await asyncio.gather(
        *(
            ask_upstream(client, limiter, url, review.text, settings.timeout)
            for url in settings.upstream_urls
        )
    )
    if all(result.error is not None for result in results):
        raise HTTPException(status_code=502, detail="no upstream answered")
    label, votes = combine(results)
    return EnsembleResponse(label=label, votes=votes, results=results)
