"""Step 14: the batch-scoring job API of step 07, its jobs on a real task queue.

Read README.md in this folder first: it states what each part must do.
Grade your work with `pytest exercises/14_task_queue`.

Given, in modules you import and do not edit: the schemas and limits (`job_schemas.py`),
the settings, the key names and the dependencies (`queue_setup.py`).
Yours, in this file: `job_status`, the app and its two routes. The task they send is in
`tasks.py`.
"""

import json
import uuid
from typing import Any

from celery.result import AsyncResult
from fastapi import FastAPI, HTTPException, Request, Response, status
from job_schemas import (
    MAX_BODY_SIZE,
    HTTPError,
    IdempotencyKeyHeader,
    Job,
    JobAccepted,
    JobRequest,
    JobStatus,
    fingerprint,
)
from queue_setup import RedisDep, SettingsDep, idempotency_key, job_key, lifespan
from tasks import celery_app, score_batch

from coursekit.docs import add_offline_docs

__all__ = ["app", "job_status"]


def job_status(state: str) -> JobStatus:
    # TODO: the course's status for one of Celery's states: STARTED is "running", SUCCESS
    # "succeeded", FAILURE (and REVOKED) "failed", anything else (PENDING, RECEIVED, RETRY)
    # "queued" (lesson: "Polling: Celery's states and the course's").
    raise NotImplementedError


# TODO: limit request bodies to MAX_BODY_SIZE bytes (lesson: "Bounding what a job costs").
app = FastAPI(
    title="Batch scoring jobs on a queue",
    version="1.0.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
)
add_offline_docs(app)

# What /openapi.json says each route may answer besides its success; 422 FastAPI
# documents by itself.
SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": HTTPError, "description": "The body is not readable (not UTF-8)"},
    409: {"model": HTTPError, "description": "The Idempotency-Key was used with another body"},
    413: {
        "model": HTTPError,
        "description": "The body is over the size limit",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}
POLL_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": HTTPError, "description": "No job has this id"},
}


@app.post("/jobs", status_code=status.HTTP_202_ACCEPTED, responses=SUBMIT_RESPONSES)
def submit_job(
    batch: JobRequest,
    request: Request,
    response: Response,
    redis: RedisDep,
    settings: SettingsDep,
    key: IdempotencyKeyHeader = None,
) -> JobAccepted:
    # TODO: record the job under job_key(...) (so a poll can tell it from an unknown id),
    # then send score_batch with the batch's texts, its task id the job's id, and answer
    # at once: the id, "queued", and a Location header with the job's URL (lesson:
    # "Enqueue from FastAPI: 202 and an id"). With an Idempotency-Key, claim the key in
    # the server in one atomic command; if an earlier request holds it, answer that
    # request's job (same id, same Location, nothing sent), or 409 if its body differs
    # (lesson: "Idempotency keys").
    raise NotImplementedError


@app.get("/jobs/{job_id}", responses=POLL_RESPONSES)
def get_job(job_id: str, redis: RedisDep, settings: SettingsDep) -> Job:
    # TODO: 404 for an id that no job has; else the job as the result backend records it
    # (AsyncResult): its status, its results once succeeded, its error (with the
    # exception's message) once failed (lesson: "Polling: Celery's states and the
    # course's").
    raise NotImplementedError
