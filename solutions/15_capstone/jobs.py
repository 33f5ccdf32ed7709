"""`POST /v1/jobs` and `GET /v1/jobs/{id}`: scoring on the queue, polled by id.

Who owns a job and which job an idempotency key made are kept in the Valkey server, so
a job submitted through one worker process is found through the other.
"""

import asyncio
import uuid
from typing import Annotated

from celery.result import AsyncResult
from contract import IDEMPOTENCY_HEADER, IdempotencyKey, Job, JobRequest, ServiceError
from fastapi import APIRouter, Header, Request
from security import CallerDep
from tasks import celery_app, score_tickets

router = APIRouter()
STATUSES = {"PENDING": "queued", "RECEIVED": "queued", "RETRY": "queued", "STARTED": "running"}


@router.post("/v1/jobs", status_code=202)
async def submit(
    job: JobRequest,
    request: Request,
    holder: CallerDep,
    key: Annotated[IdempotencyKey | None, Header(alias=IDEMPOTENCY_HEADER)] = None,
) -> Job:
    redis = request.app.state.redis
    job_id = uuid.uuid4().hex
    if key is not None:
        # SET NX: of two requests with the same key, through any worker, one wins.
        won = await redis.set(f"idempotency:{holder.user}:{key}", job_id, nx=True, ex=86400)
        if not won:
            existing = (await redis.get(f"idempotency:{holder.user}:{key}")).decode()
            return await read(existing, request, holder)
    await redis.set(f"job:{job_id}:owner", holder.user, ex=86400)
    # apply_async talks to the broker (blocking I/O): off the event loop.
    await asyncio.to_thread(score_tickets.apply_async, (job.texts,), task_id=job_id)
    return Job(id=job_id, status="queued")


@router.get("/v1/jobs/{job_id}")
async def read(job_id: str, request: Request, holder: CallerDep) -> Job:
    owner = await request.app.state.redis.get(f"job:{job_id}:owner")
    if owner is None or owner.decode() != holder.user:
        raise ServiceError(404, "job_not_found", "You hold no job with this id.")
    result = AsyncResult(job_id, app=celery_app)
    state = await asyncio.to_thread(lambda: result.state)
    if state == "SUCCESS":
        return Job(id=job_id, status="succeeded", result=result.result)
    if state == "FAILURE":
        return Job(id=job_id, status="failed", error=str(result.result))
    return Job(id=job_id, status=STATUSES.get(state, "queued"))
