"""Step 06: an ensemble endpoint that asks several model services at once.

Read README.md in this folder first: it states what the endpoint must do.
Grade your work with `pytest exercises/06_async_concurrency`.
"""

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
    # TODO: read the settings with get_settings(). Open ONE httpx.AsyncClient with
    # timeout=httpx.Timeout(settings.timeout), in an `async with` block so that it is
    # closed at shutdown, and make ONE asyncio.Semaphore(settings.max_in_flight). Inside
    # the block, `yield {"client": client, "limiter": semaphore}`: requests then find
    # them on request.state (see get_client and get_limiter below).
    raise NotImplementedError
    yield {}  # unreachable; it makes this function the generator asynccontextmanager needs


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
    # TODO: inside `async with limiter:`, `await client.post(f"{url}/predict", json=...)`
    # with {"text": text}, then response.raise_for_status(). Turn each failure into an
    # error entry, UpstreamResult(upstream=url, error=...):
    # - httpx.TimeoutException -> "timeout" (catch it FIRST: it is a TransportError too);
    # - httpx.HTTPStatusError -> f"HTTP {status code}", e.g. "HTTP 503";
    # - httpx.TransportError (could not connect, ...) -> "unreachable".
    # On success, return UpstreamResult(upstream=url, label=..., score=...) from the JSON.
    # Do not use a blocking client (httpx.Client, requests) here: it would freeze the loop.
    raise NotImplementedError


def combine(results: list[UpstreamResult]) -> tuple[str, int]:
    """The majority label of the answers and its votes; a tie goes to the higher total score."""
    # TODO: skip the error entries. Count the votes per label (a Counter) and add up the
    # scores per label (a defaultdict(float)). Return the label with the most votes and
    # its number of votes; on a tie in votes, the label with the higher total score wins.
    # max() with a key that returns a (votes, total score) tuple picks that label.
    raise NotImplementedError


@app.post("/ensemble")
async def ensemble(
    body: EnsembleRequest, settings: SettingsDep, client: ClientDep, limiter: LimiterDep
) -> EnsembleResponse:
    # TODO: ask every upstream in settings.upstream_urls AT ONCE: asyncio.gather over
    # ask_upstream(...) calls, one per URL (gather keeps the order of the URLs). If every
    # result is an error entry, raise HTTPException(502, ...); otherwise combine() the
    # results and return an EnsembleResponse(label=..., votes=..., results=...).
    raise NotImplementedError
