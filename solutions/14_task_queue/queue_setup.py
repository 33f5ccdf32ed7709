"""Step 14: the queue's settings, the Celery app and what the routes depend on (given: read
it, do not edit it).

- `Settings`: read from `JOBS_*` variables, e.g. `JOBS_QUEUE=jobs-test-1`;
- `create_celery(settings)`: a Celery app whose broker and result backend are the one
  Redis-compatible server at `settings.redis_url`, its jobs on the queue `settings.queue`;
- `ResultBackend`: Celery's Redis result backend with one race closed (a late write never
  replaces a job's final state; see its docstring);
- `job_key`, `idempotency_key`: the names of the API's own keys in that server, inside the
  queue's namespace, so services (and tests) that share a server never see each other's;
- `retry_delay(settings, retries)`: how long to wait before the next attempt;
- `lifespan`, `SettingsDep`, `RedisDep`: the settings and one client of the server, made
  at start-up, for the routes.
"""

import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import redis
from celery import Celery, states
from celery.backends.redis import RedisBackend
from fastapi import Depends, FastAPI, Request
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_RETRIES = 3  # attempts after the first, for an error that may pass


def default_redis_url() -> str:
    """COURSE_REDIS_URL if it is set (a server you run), else a server on this machine."""
    return os.environ.get("COURSE_REDIS_URL", "").strip() or "redis://localhost:6379/0"


class Settings(BaseSettings):
    """Read from the environment, e.g. `JOBS_REDIS_URL=redis://localhost:6379/0`."""

    model_config = SettingsConfigDict(env_prefix="JOBS_")

    redis_url: str = Field(default_factory=default_redis_url)  # broker and result backend
    queue: str = "jobs"  # the queue the jobs go to, and the namespace of the API's keys
    # Seconds a job may stay unacknowledged before the server hands it to another worker.
    visibility_timeout: float = 3600.0
    result_expires: int = 86_400  # seconds a finished job's result is kept (a day)
    retry_backoff: float = 1.0  # seconds before the first retry; doubled at each retry
    scorer: Literal["tickets", "drill"] = "tickets"  # see scoring.py


class ResultBackend(RedisBackend):
    """Celery's Redis result backend, except that a late write never replaces a job's end.

    A task that retries sends its next attempt first and records RETRY after, so on a busy
    machine another worker can run that attempt to the end (SUCCESS, or FAILURE past the
    last retry) before the RETRY is written. Celery checks for SUCCESS and then writes, in
    two round trips, and does not check for FAILURE: the late RETRY would then hide the
    job's outcome for good. Here the check and the write are one transaction (WATCH the
    key, read it, write only if the record may be replaced), and a final state (SUCCESS,
    FAILURE, REVOKED) is replaced only by another final one, SUCCESS never.
    """

    def _set_with_state(self, key: str | bytes, value: str | bytes, state: str) -> None:
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            return super()._set_with_state(key, value, state)  # Celery's error for it
        expires = self.failure_expires if state == states.FAILURE else self.expires
        self.ensure(self._set_unless_ended, (key, value, state, expires))

    def _set_unless_ended(
        self, key: str | bytes, value: str | bytes, state: str, expires: int | None
    ) -> None:
        def check_and_set(pipe: redis.client.Pipeline) -> None:
            current = pipe.get(key)  # WATCHed: a write by anyone else now makes EXEC retry
            if current is not None:
                ended = self.decode_result(current)["status"]
                if ended == states.SUCCESS or (
                    ended in states.READY_STATES and state not in states.READY_STATES
                ):
                    return
            pipe.multi()
            pipe.set(key, value, ex=expires or None)  # seconds the result is kept, if any
            pipe.publish(key, value)  # for clients waiting with AsyncResult.get()

        self.client.transaction(check_and_set, key)


def create_celery(settings: Settings) -> Celery:
    """The Celery app of the jobs: the API sends with it, the workers run its tasks."""
    # "module:Class+URL" is how Celery takes a backend class of its own with its URL.
    backend = f"{__name__}:ResultBackend+{settings.redis_url}"
    celery_app = Celery("jobs", broker=settings.redis_url, backend=backend)
    celery_app.conf.update(
        task_default_queue=settings.queue,
        # JSON, never pickle: a worker must not run code that a message carries.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Record STARTED when a worker begins a job, so a poll can tell running from queued.
        task_track_started=True,
        result_expires=settings.result_expires,
        # A worker takes one job at a time from the server, so jobs spread over workers.
        worker_prefetch_multiplier=1,
        broker_transport_options={
            # Every key the broker writes starts with the queue's name: the jobs waiting,
            # and those a worker has taken and not yet acknowledged, which a worker of
            # another queue on the same server would otherwise hand out again.
            "global_keyprefix": f"{settings.queue}:",
            "visibility_timeout": settings.visibility_timeout,
            # How often a worker looks for jobs whose worker went away (kombu's default is
            # every 10 s, and only every 10th look scans: 100 s). A quarter of the
            # visibility timeout, at most 10 s, every look a scan.
            "unacked_restore_interval": max(0.1, min(10.0, settings.visibility_timeout / 4)),
            "unacked_restore_throttle": 1,
            "socket_timeout": 30,
            "socket_connect_timeout": 30,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # A busy machine can keep the server from answering for seconds: wait that out
        # rather than fail a job (Celery's defaults give up after 4 s, or 3 quick retries).
        broker_connection_timeout=30,
        redis_socket_timeout=30,
        redis_socket_connect_timeout=30,
        task_publish_retry_policy={
            "max_retries": 10,
            "interval_start": 0.1,
            "interval_step": 0.5,
            "interval_max": 2,
        },
    )
    return celery_app


def retry_delay(settings: Settings, retries: int) -> float:
    """Seconds to wait before attempt `retries + 2`: exponential backoff, full jitter.

    The ceiling doubles at each retry (1 s, 2 s, 4 s with the default backoff) and the wait
    is a random share of it, so workers that failed together do not retry together.
    """
    return random.uniform(0, settings.retry_backoff * 2**retries)


def job_key(settings: Settings, job_id: str) -> str:
    """The key under which the API records that a job exists."""
    return f"{settings.queue}:job:{job_id}"


def idempotency_key(settings: Settings, key: str) -> str:
    """The key under which the API remembers the job an Idempotency-Key created."""
    return f"{settings.queue}:idempotency:{key}"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At each start-up: read the settings and open one client of the server."""
    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    app.state.settings = settings
    app.state.redis = client
    try:
        yield
    finally:
        client.close()


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_redis(request: Request) -> redis.Redis:
    return request.app.state.redis


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
