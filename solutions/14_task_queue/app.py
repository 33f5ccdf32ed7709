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
    """The course's status for one of Celery's task states."""
    if state == "STARTED":
        return "running"
    if state == "SUCCESS":
        return "succeeded"
    if state in {"FAILURE", "REVOKED"}:
        return "failed"
    # PENDING (Celery's answer for any id it has no record of: here, a job not begun),
    # RECEIVED, and RETRY (waiting for its next attempt).
    return "queued"


app = FastAPI(
    title="Batch scoring jobs on a queue",
    version="1.0.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
    # Starlette stops reading a body past this size: no client can make us buffer, and
    # then queue, 50 MB of texts.
    max_body_size=MAX_BODY_SIZE,
)
add_offline_docs(app)

SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": HTTPError, "description": "The body is not readable (not UTF-8)"},
    409: {"model": HTTPError, "description": "The Idempotency-Key was used with another body"},
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


@app.post("/jobs", status_code=status.HTTP_202_ACCEPTED, responses=SUBMIT_RESPONSES)
def submit_job(
    batch: JobRequest,
    request: Request,
    response: Response,
    redis: RedisDep,
    settings: SettingsDep,
    key: IdempotencyKeyHeader = None,
) -> JobAccepted:
    job_id = uuid.uuid4().hex
    # Recorded before anyone can learn the id, so a poll never finds a job unknown. It
    # expires with the job's result.
    redis.set(job_key(settings, job_id), "1", ex=settings.result_expires)
    if key is not None:
        claim = json.dumps({"job_id": job_id, "fingerprint": fingerprint(batch)})
        # One atomic command: set the key if nobody has, else read whose it is. Two API
        # processes that get the same key at the same moment cannot both win.
        earlier = redis.set(
            idempotency_key(settings, key), claim, nx=True, get=True, ex=settings.result_expires
        )
        if earlier is not None:
            redis.delete(job_key(settings, job_id))
            first = json.loads(earlier)
            if first["fingerprint"] != fingerprint(batch):
                raise HTTPException(
                    status_code=status.HTTP_409_CONFLICT,
                    detail="This Idempotency-Key was already used with another body.",
                )
            job_id = first["job_id"]
            response.headers["Location"] = str(request.url_for("get_job", job_id=job_id))
            return JobAccepted(id=job_id, status="queued")
    # The job's id is the task's id: the result backend files its state under it.
    score_batch.apply_async((batch.texts,), task_id=job_id)
    response.headers["Location"] = str(request.url_for("get_job", job_id=job_id))
    return JobAccepted(id=job_id, status="queued")


@app.get("/jobs/{job_id}", responses=POLL_RESPONSES)
def get_job(job_id: str, redis: RedisDep, settings: SettingsDep) -> Job:
    # Celery answers PENDING for any id at all: only our own record tells a job not yet
    # begun from an id that no job has.
    if not redis.exists(job_key(settings, job_id)):
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"No job {job_id!r}")
    result = AsyncResult(job_id, app=celery_app)
    job_state = job_status(result.state)
    if job_state == "succeeded":
        return Job(id=job_id, status=job_state, results=result.result)
    if job_state == "failed":
        error = result.result
        return Job(id=job_id, status=job_state, error=f"{type(error).__name__}: {error}")
    return Job(id=job_id, status=job_state)
