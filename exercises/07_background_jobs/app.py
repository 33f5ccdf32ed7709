"""Step 07: a batch-scoring job API with BackgroundTasks and SQLite.

Read README.md in this folder first: it states what each part must do.
Grade your work with `pytest exercises/07_background_jobs`.

Given, in modules you import and do not edit: the schemas and limits (`job_schemas.py`), the
database file's table, `connect` and `init_database` (`job_database.py`), the settings, the
scorer, the lifespan and the dependencies (`job_dependencies.py`).
Yours, in this file: the three job-store functions, `run_job`, the app and its two routes.
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
    # TODO: add the job's row to the file at `database_path`, status "queued", the texts
    # stored as JSON. Open and close a connection here, as init_database does, and pass
    # the values as parameters, never inside the SQL text (lesson: "Recording jobs in
    # SQLite").
    raise NotImplementedError


def update_job(
    database_path: Path,
    job_id: str,
    job_status: JobStatus,
    results: list[Prediction] | None = None,
    error: str | None = None,
) -> None:
    # TODO: set this job's status, results (as JSON, or NULL when there are none) and
    # error, and no other job's (lesson: "Recording jobs in SQLite").
    raise NotImplementedError


def find_job(database_path: Path, job_id: str) -> Job | None:
    # TODO: read this job's row back as a Job, its results decoded from JSON; None when
    # no row has this id (lesson: "Recording jobs in SQLite").
    raise NotImplementedError


# --- The work itself, run by BackgroundTasks after the response is sent -----------------


def run_job(database_path: Path, job_id: str, texts: list[str], scorer: Scorer) -> None:
    # TODO: move the job through its states with update_job: "running", then the scorer
    # on the whole batch, then "succeeded" with its predictions. If anything in there
    # raises (the scorer, or a write), record "failed" with the exception's message; if
    # even that write fails, log it. Nothing may escape. Keep it a plain `def` (lesson:
    # "Running the job and recording its state" and "When the job fails").
    raise NotImplementedError


# TODO: limit request bodies to MAX_BODY_SIZE bytes (lesson: "Bounding what a job costs").
app = FastAPI(
    title="Batch scoring jobs",
    version="1.0.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
)
add_offline_docs(app)

# TODO: what /openapi.json should say each route may answer besides its success: 400 and
# 413 for POST /jobs, 404 for GET /jobs/{job_id}, each with the HTTPError model, and the
# 413 also as the plain text Starlette sends (lesson: "Documenting every answer").
# FastAPI documents 422 by itself.
SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {}
POLL_RESPONSES: dict[int | str, dict[str, Any]] = {}


# TODO: answer 202 Accepted, and say so in the decorator so /openapi.json documents it;
# document SUBMIT_RESPONSES too (lesson: "The job pattern: 202 and a job id").
@app.post("/jobs")
def submit_job(
    batch: JobRequest,
    background_tasks: BackgroundTasks,
    request: Request,
    response: Response,
    settings: SettingsDep,
    scorer: ScorerDep,
) -> JobAccepted:
    # TODO: give the job a new id that no other job has, even after a restart, and record
    # it as queued in the database at settings.database_path before you answer. Schedule
    # run_job with the scorer you were given to run after the response, never here. Point
    # the Location header at the job's URL and answer its id and status (lesson: "The job
    # pattern: 202 and a job id").
    raise NotImplementedError


# TODO: document POLL_RESPONSES (lesson: "Polling a job: GET /jobs/{id}").
@app.get("/jobs/{job_id}")
def get_job(job_id: str, settings: SettingsDep) -> Job:
    # TODO: the job as the database records it; an id no job has is a 404 (lesson:
    # "Polling a job: GET /jobs/{id}").
    raise NotImplementedError
