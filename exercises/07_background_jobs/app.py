"""Step 07: a batch-scoring job API with BackgroundTasks and SQLite.

Read README.md in this folder first: it states what each endpoint must do.
Grade your work with `pytest exercises/07_background_jobs`.

Given ready-made: the settings, the Pydantic models, the scorer, the database schema,
`connect` and `init_database` (copy their pattern), the lifespan and `get_scorer`.
Yours: the batch limits, the three job-store functions, `run_job` and the two routes.
"""

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request, Response, status
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from coursekit.docs import add_offline_docs
from coursekit.models import LoadedModel, load_model

MAX_BATCH_SIZE = 100


class Settings(BaseSettings):
    """Read from the environment, e.g. `JOBS_DATABASE_PATH=/tmp/jobs.sqlite3`."""

    model_config = SettingsConfigDict(env_prefix="JOBS_")

    database_path: Path = Path("jobs.sqlite3")


@lru_cache
def get_settings() -> Settings:
    return Settings()


class Prediction(BaseModel):
    label: str
    confidence: float


class JobRequest(BaseModel):
    # TODO: accept 1 to MAX_BATCH_SIZE texts: give `texts` a Field with min_length and
    # max_length, so FastAPI answers 422 to an empty or oversized batch by itself.
    texts: list[str]


JobStatus = Literal["queued", "running", "succeeded", "failed"]


class JobAccepted(BaseModel):
    id: str
    status: JobStatus


class Job(BaseModel):
    id: str
    status: JobStatus
    results: list[Prediction] | None = None
    error: str | None = None


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


# --- The job store: one SQLite file, one short-lived connection per use ----------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    texts TEXT NOT NULL,
    results TEXT,
    error TEXT
)
"""


def connect(database_path: Path) -> sqlite3.Connection:
    # A connection may only be used in the thread that opened it (check_same_thread), and
    # the route and the task run in different threads: each use opens its own.
    connection = sqlite3.connect(database_path)
    connection.row_factory = sqlite3.Row
    return connection


def init_database(database_path: Path) -> None:
    with closing(connect(database_path)) as connection, connection:
        connection.execute(SCHEMA)


def insert_job(database_path: Path, job_id: str, texts: list[str]) -> None:
    # TODO: insert a row for the job with status 'queued' and the texts as JSON
    # (json.dumps). Open a connection as init_database does: `closing(...)` closes it,
    # `with connection:` commits. Use ? placeholders, never f-strings, in SQL.
    raise NotImplementedError


def update_job(
    database_path: Path,
    job_id: str,
    job_status: JobStatus,
    results: list[Prediction] | None = None,
    error: str | None = None,
) -> None:
    # TODO: set the job's status, results and error columns. Store the results as JSON:
    # json.dumps of [prediction.model_dump() for prediction in results], or NULL (None)
    # when there are none.
    raise NotImplementedError


def find_job(database_path: Path, job_id: str) -> Job | None:
    # TODO: read the job's row (fetchone() gives None when there is none) and return it
    # as a Job, the results decoded with json.loads; return None for an unknown id.
    raise NotImplementedError


# --- The work itself, run by BackgroundTasks after the response is sent -----------------


def run_job(database_path: Path, job_id: str, texts: list[str], scorer: Scorer) -> None:
    # TODO: record the job as "running", then call scorer(texts). If it returns, record
    # "succeeded" with the predictions; if it raises any Exception, record "failed" with
    # an error that holds the exception's message (str(error)). Never let it escape.
    # Keep this a plain `def`: Starlette runs it in the threadpool, off the event loop.
    raise NotImplementedError


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    init_database(get_settings().database_path)
    app.state.scorer = TicketScorer(load_model("tickets"))
    yield


app = FastAPI(
    title="Batch scoring jobs",
    version="1.0.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
)
add_offline_docs(app)


def get_scorer(request: Request) -> Scorer:
    return request.app.state.scorer


SettingsDep = Annotated[Settings, Depends(get_settings)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]


@app.post("/jobs")
def submit_job(
    batch: JobRequest,
    background_tasks: BackgroundTasks,
    request: Request,
    response: Response,
    settings: SettingsDep,
    scorer: ScorerDep,
) -> JobAccepted:
    # TODO: answer 202 Accepted: set status_code in the decorator above (fastapi.status
    # has HTTP_202_ACCEPTED), so /openapi.json documents it too. Then:
    # - make a new unique id with uuid.uuid4().hex and record the job as queued;
    # - schedule run_job with background_tasks.add_task(...) (do NOT call it here: the
    #   answer must leave before the work starts), passing the scorer you were given;
    # - set the Location header to the job's URL: request.url_for("get_job", job_id=...);
    # - return a JobAccepted with the id and status "queued".
    raise NotImplementedError


@app.get("/jobs/{job_id}")
def get_job(job_id: str, settings: SettingsDep) -> Job:
    # TODO: return the job as find_job reads it from the database; for an unknown id,
    # raise HTTPException with status 404.
    raise NotImplementedError
