"""Step 06, solved: an ensemble endpoint that asks several model services at once."""

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from coursekit.docs import add_offline_docs


class Settings(BaseSettings):
    """The service's configuration, read from ENSEMBLE_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="ENSEMBLE_")

    upstream_urls: list[str] = []  # base URLs of the model services, in answer order
    timeout: float = Field(default=1.0, gt=0)  # seconds one upstream call may take
    max_in_flight: int = Field(default=8, ge=1)  # upstream calls at once, all requests together


@lru_cache
def get_settings() -> Settings:
    return Settings()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    settings = get_settings()
    # One client for the life of the app: its connection pool keeps connections to the
    # upstreams open, so a request does not pay for a new TCP connection per call.
    async with httpx.AsyncClient(timeout=httpx.Timeout(settings.timeout)) as client:
        # One semaphore for the whole app, so the bound holds across concurrent requests.
        yield {"client": client, "limiter": asyncio.Semaphore(settings.max_in_flight)}


app = FastAPI(title="Ensemble", version="1.0.0", lifespan=lifespan, docs_url=None, redoc_url=None)
add_offline_docs(app)  # /docs and /redoc without a CDN (see lesson 01)


class EnsembleRequest(BaseModel):
    text: str = Field(min_length=1)


class UpstreamResult(BaseModel):
    upstream: str
    label: str | None = None
    score: float | None = None
    error: str | None = None


class EnsembleResponse(BaseModel):
    label: str
    votes: int
    results: list[UpstreamResult]


def get_client(request: Request) -> httpx.AsyncClient:
    return request.state.client


def get_limiter(request: Request) -> asyncio.Semaphore:
    return request.state.limiter


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[httpx.AsyncClient, Depends(get_client)]
LimiterDep = Annotated[asyncio.Semaphore, Depends(get_limiter)]


async def ask_upstream(
    client: httpx.AsyncClient, limiter: asyncio.Semaphore, url: str, text: str
) -> UpstreamResult:
    """One upstream's answer, or an error entry: this function never raises."""
    async with limiter:
        try:
            response = await client.post(f"{url}/predict", json={"text": text})
            response.raise_for_status()
        # TimeoutException is a TransportError too, so it must be caught first.
        except httpx.TimeoutException:
            return UpstreamResult(upstream=url, error="timeout")
        except httpx.HTTPStatusError as error:
            return UpstreamResult(upstream=url, error=f"HTTP {error.response.status_code}")
        except httpx.TransportError:
            return UpstreamResult(upstream=url, error="unreachable")
    prediction = response.json()
    return UpstreamResult(upstream=url, label=prediction["label"], score=prediction["score"])


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


@app.post("/ensemble")
async def ensemble(
    body: EnsembleRequest, settings: SettingsDep, client: ClientDep, limiter: LimiterDep
) -> EnsembleResponse:
    # gather starts every call before awaiting any, and returns the results in the
    # order of its arguments, whatever order the upstreams answer in.
    results = await asyncio.gather(
        *(ask_upstream(client, limiter, url, body.text) for url in settings.upstream_urls)
    )
    if all(result.error is not None for result in results):
        raise HTTPException(status_code=502, detail="no upstream answered")
    label, votes = combine(results)
    return EnsembleResponse(label=label, votes=votes, results=results)
