"""Step 07, solved: a batch-scoring job API with BackgroundTasks and SQLite.

`POST /jobs` records a batch of texts as a queued job, schedules the scoring to run
after the response, and answers 202 with the job's id at once. `GET /jobs/{job_id}`
reports the job as it is recorded in the database: queued, running, succeeded (with
one prediction per text) or failed (with the error).
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
    texts: list[str] = Field(min_length=1, max_length=MAX_BATCH_SIZE)


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
    with closing(connect(database_path)) as connection, connection:
        connection.execute(
            "INSERT INTO jobs (id, status, texts) VALUES (?, 'queued', ?)",
            (job_id, json.dumps(texts)),
        )


def update_job(
    database_path: Path,
    job_id: str,
    job_status: JobStatus,
    results: list[Prediction] | None = None,
    error: str | None = None,
) -> None:
    stored_results = None if results is None else json.dumps([r.model_dump() for r in results])
    with closing(connect(database_path)) as connection, connection:
        connection.execute(
            "UPDATE jobs SET status = ?, results = ?, error = ? WHERE id = ?",
            (job_status, stored_results, error, job_id),
        )


def find_job(database_path: Path, job_id: str) -> Job | None:
    with closing(connect(database_path)) as connection:
        row = connection.execute(
            "SELECT id, status, results, error FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    if row is None:
        return None
    results = None if row["results"] is None else json.loads(row["results"])
    return Job(id=row["id"], status=row["status"], results=results, error=row["error"])


# --- The work itself, run by BackgroundTasks after the response is sent -----------------


def run_job(database_path: Path, job_id: str, texts: list[str], scorer: Scorer) -> None:
    # A plain `def`: Starlette runs it in the threadpool, so the CPU-bound scoring never
    # blocks the event loop that answers the polls.
    update_job(database_path, job_id, "running")
    try:
        predictions = scorer(texts)
    except Exception as error:
        # Nobody is waiting for this function to return: an exception that escaped would
        # only reach the server log, and the job would stay "running" forever.
        update_job(database_path, job_id, "failed", error=f"{type(error).__name__}: {error}")
        return
    update_job(database_path, job_id, "succeeded", results=predictions)


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


@app.post("/jobs", status_code=status.HTTP_202_ACCEPTED)
def submit_job(
    batch: JobRequest,
    background_tasks: BackgroundTasks,
    request: Request,
    response: Response,
    settings: SettingsDep,
    scorer: ScorerDep,
) -> JobAccepted:
    job_id = uuid.uuid4().hex
    # Recorded before the answer leaves, so a client that polls at once finds its job.
    insert_job(settings.database_path, job_id, batch.texts)
    background_tasks.add_task(run_job, settings.database_path, job_id, batch.texts, scorer)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job_id))
    return JobAccepted(id=job_id, status="queued")


@app.get("/jobs/{job_id}")
def get_job(job_id: str, settings: SettingsDep) -> Job:
    job = find_job(settings.database_path, job_id)
    if job is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"No job {job_id!r}")
    return job
