"""Step 06's given code: the settings, the bodies, the bounds, the documented responses.

Given: read it, do not edit it. Your app.py imports what it needs from here.
"""

from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The service's configuration, read from ENSEMBLE_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="ENSEMBLE_")

    upstream_urls: list[str] = []  # base URLs of the model services, in answer order
    timeout: float = Field(default=1.0, gt=0)  # seconds one upstream call may take, all in
    max_in_flight: int = Field(default=8, ge=1)  # upstream calls at once, all requests together


@lru_cache
def get_settings() -> Settings:
    """The settings, read from the environment on the first call only."""
    return Settings()


async def current_settings() -> Settings:
    """The settings, as a dependency of the routes."""
    # `async def`, though it never awaits: FastAPI runs a plain `def` dependency in its
    # threadpool, a thread hop on every request for what is a dictionary lookup.
    return get_settings()


MAX_TEXT_LENGTH = 10_000  # characters: a long review; longer texts are a 422
# Bytes. A text of MAX_TEXT_LENGTH characters takes at most 12 bytes each in JSON (an
# emoji written as two \uXXXX escapes), so any valid request fits, and nothing far larger.
MAX_BODY_SIZE = 131_072


class EnsembleRequest(BaseModel):
    """The text every upstream model is asked about."""

    text: str = Field(min_length=1, max_length=MAX_TEXT_LENGTH)


class Prediction(BaseModel):
    """What an upstream answers when it works: its model, a label and a score."""

    model: str
    label: Literal["positive", "negative", "neutral"]
    score: float = Field(ge=0.5, le=1.0)


class UpstreamResult(BaseModel):
    """One upstream's entry in the answer: its label and score, or what went wrong."""

    upstream: str
    label: str | None = None
    score: float | None = None
    error: str | None = None


class EnsembleResponse(BaseModel):
    """The combined label, its votes, and every upstream's entry in configured order."""

    label: str
    votes: int
    results: list[UpstreamResult]


class Message(BaseModel):
    """FastAPI's error body: `{"detail": "..."}`."""

    detail: str


# What /openapi.json lists besides 200 and the 422 that FastAPI documents by itself.
ENSEMBLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Message, "description": "The body could not be read (bytes that are not UTF-8)"},
    413: {
        "model": Message,
        # Plain text when the request declared its size (Content-Length): Starlette
        # answers before FastAPI reads anything.
        "description": "The body is over MAX_BODY_SIZE bytes",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    502: {"model": Message, "description": "No upstream answered"},
}
