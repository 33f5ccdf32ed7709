"""Step 14: the job API's schemas and limits (given: read it, do not edit it).

What a client may send (`JobRequest` and the `Idempotency-Key` header, each bounded so
that no request can make the service store or score without limit) and what it gets back
(`JobAccepted`, `Job`, `HTTPError`). The same shapes as step 07's, so a client of step 07
works unchanged against the queue.
"""

import hashlib
import json
from typing import Annotated, Literal

from fastapi import Header
from pydantic import BaseModel, Field, StringConstraints

MAX_BATCH_SIZE = 100  # texts per job
MAX_TEXT_LENGTH = 2000  # characters per text, after stripping: a long ticket, not a document
# Bytes per request body. A full batch of long tickets fits easily (100 x 2,000 characters
# of UTF-8 is at most 600 kB); anything bigger is refused before it is read into memory.
MAX_BODY_SIZE = 1_048_576
# Characters per Idempotency-Key: a UUID is 36. Every key is stored in the server for a
# day, so its length is bounded like any other input.
MAX_KEY_LENGTH = 128

JobStatus = Literal["queued", "running", "succeeded", "failed"]

# Strip first, then check the length: a text of spaces is empty, not a ticket.
TicketText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH)
]

# The optional `Idempotency-Key` request header: 1 to MAX_KEY_LENGTH characters, or a 422.
IdempotencyKeyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=MAX_KEY_LENGTH)
]


class JobRequest(BaseModel):
    """A batch of support tickets to label."""

    texts: Annotated[
        list[TicketText],
        Field(
            min_length=1,
            max_length=MAX_BATCH_SIZE,
            examples=[["I was charged twice this month", "The app crashes on start"]],
        ),
    ]


def fingerprint(batch: JobRequest) -> str:
    """A short digest of what the batch asks for: equal batches, equal fingerprints.

    Stored with an idempotency key, it tells a repeat of the same request (same
    fingerprint) from another request that reuses the key (a different one).
    """
    return hashlib.sha256(json.dumps(batch.texts).encode()).hexdigest()


class Prediction(BaseModel):
    label: str
    confidence: float


class JobAccepted(BaseModel):
    """The answer to a new job: where it is, and that it waits to run."""

    id: str
    status: JobStatus


class Job(BaseModel):
    """A job as the result backend records it: its results once it succeeded, its error
    once it failed."""

    id: str
    status: JobStatus
    results: list[Prediction] | None = None
    error: str | None = None


class HTTPError(BaseModel):
    """FastAPI's body for an HTTPException: `{"detail": "..."}`."""

    detail: str
