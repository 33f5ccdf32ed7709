"""Step 07: what the routes depend on, prepared at start-up (given: read it, do not edit it).

- `Settings`: read from the environment at each start-up (never at import), e.g.
  `JOBS_DATABASE_PATH=/tmp/jobs.sqlite3`;
- `TicketScorer`: labels texts with the tickets model, loaded once at start-up;
- `lifespan`: creates the table, loads the model and keeps the database open, for the
  life of the app;
- `get_settings`, `get_scorer` and their `Annotated` forms, `SettingsDep`, `ScorerDep`.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from job_database import init_database, kept_open
from job_schemas import Prediction
from pydantic_settings import BaseSettings, SettingsConfigDict

from coursekit.models import LoadedModel, load_model


class Settings(BaseSettings):
    """Read from the environment, e.g. `JOBS_DATABASE_PATH=/tmp/jobs.sqlite3`."""

    model_config = SettingsConfigDict(env_prefix="JOBS_")

    database_path: Path = Path("jobs.sqlite3")


# A scorer takes a batch of texts and returns one prediction per text, in order.
Scorer = Callable[[list[str]], list[Prediction]]


class TicketScorer:
    """Labels tickets with the tickets model: the most probable class and its probability."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def __call__(self, texts: list[str]) -> list[Prediction]:
        probabilities = self.model.pipeline.predict_proba(texts)
        return [
            Prediction(label=self.model.classes[int(row.argmax())], confidence=float(row.max()))
            for row in probabilities
        ]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Read here, at each start-up: the environment of the process that serves decides,
    # not whatever it was when the module happened to be imported.
    settings = Settings()
    init_database(settings.database_path)
    app.state.settings = settings
    app.state.scorer = TicketScorer(load_model("tickets"))
    with kept_open(settings.database_path):
        yield


# `async def`: they only read app.state, so they need no thread of the threadpool.
async def get_settings(request: Request) -> Settings:
    """The settings the app read at start-up."""
    return request.app.state.settings


async def get_scorer(request: Request) -> Scorer:
    """The scorer the app loaded at start-up (tests replace it with dependency_overrides)."""
    return request.app.state.scorer


SettingsDep = Annotated[Settings, Depends(get_settings)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
