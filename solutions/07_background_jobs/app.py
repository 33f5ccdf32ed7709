"""Step 07, solved: a batch-scoring job API with BackgroundTasks and SQLite.

`POST /jobs` records a batch of texts as a queued job, schedules the scoring to run
after the response, and answers 202 with the job's id at once. `GET /jobs/{job_id}`
reports the job as it is recorded in the database: queued, running, succeeded (with
one prediction per text) or failed (with the error).
"""

import json
import logging
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

from fastapi import BackgroundTasks, FastAPI, HTTPException, Request, Response, status
from job_database import connect
from job_dependencies import Scorer, ScorerDep, SettingsDep, get_scorer, lifespan
from job_schemas import (
    MAX_BODY_SIZE,
    HTTPError,
    Job,
    JobAccepted,
    JobRequest,
    JobStatus,
    Prediction,
)

from coursekit.docs import add_offline_docs

__all__ = ["Prediction", "app", "get_scorer"]  # what the tests import from here

logger = logging.getLogger(__name__)


# --- The job store: one SQLite file, one short-lived connection per use ----------------


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
    try:
        # All three steps inside the guard: the scorer can raise, and so can each write
        # (a locked database, results that cannot be stored as JSON).
        update_job(database_path, job_id, "running")
        predictions = scorer(texts)
        update_job(database_path, job_id, "succeeded", results=predictions)
    except Exception as error:
        # Nobody is waiting for this function to return: an exception that escaped would
        # only reach the server log, and the job would stay "running" forever.
        logger.exception("Job %s failed", job_id)
        try:
            update_job(database_path, job_id, "failed", error=f"{type(error).__name__}: {error}")
        except Exception:
            # Not even the failure can be recorded (the database is gone): log it, and
            # still return, or BackgroundTasks would skip the tasks queued after this one.
            logger.exception("Job %s: its failure could not be recorded", job_id)


app = FastAPI(
    title="Batch scoring jobs",
    version="1.0.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
    # Starlette stops reading a body past this size: no client can make us buffer, and
    # then store, 50 MB of texts.
    max_body_size=MAX_BODY_SIZE,
)
add_offline_docs(app)

# What /openapi.json (and so /docs) says each route may answer besides its success; 422
# FastAPI documents by itself.
SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": HTTPError, "description": "The body is not readable (not UTF-8)"},
    # Plain text when the request declared its size (Starlette answers before reading);
    # HTTPError's JSON when it streamed the body (FastAPI raises while reading it).
    413: {
        "model": HTTPError,
        "description": "The body is over the size limit",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}
POLL_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": HTTPError, "description": "No job has this id"},
}


@app.post("/jobs", responses=SUBMIT_RESPONSES, status_code=status.HTTP_202_ACCEPTED)
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


@app.get("/jobs/{job_id}", responses=POLL_RESPONSES)
def get_job(job_id: str, settings: SettingsDep) -> Job:
    job = find_job(settings.database_path, job_id)
    if job is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"No job {job_id!r}")
    return job
