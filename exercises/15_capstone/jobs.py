"""The job routes (a suggested module: lay it out as you like)."""

from contract import Job, JobRequest
from fastapi import APIRouter

router = APIRouter()


@router.post("/v1/jobs", status_code=202)
async def submit(job: JobRequest) -> Job:
    # TODO: enqueue the task of tasks.py, once per Idempotency-Key, and answer the job at
    # once (lesson: "Jobs: idempotency on the queue").
    raise NotImplementedError


@router.get("/v1/jobs/{job_id}")
async def read(job_id: str) -> Job:
    # TODO: the caller's job and its status from the result backend; 404 otherwise
    # (lesson: "Jobs: idempotency on the queue").
    raise NotImplementedError
