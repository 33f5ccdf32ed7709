"""The queue: a Celery app on the Valkey server, and the task its workers run.

Start a worker from this folder with
`celery -A tasks:celery_app worker --pool solo --concurrency 1`.
"""

from functools import cache
from typing import Any

from celery import Celery
from celery.signals import worker_init
from contract import Settings, predict_tickets

from coursekit.models import LoadedModel, load_model

settings = Settings()
celery_app = Celery("capstone", broker=settings.redis_url, backend=settings.redis_url)
celery_app.conf.update(
    task_track_started=True,  # a job says "running" once a worker has taken it
    result_expires=3600,  # results are kept an hour, then the backend forgets them
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # A busy machine can keep the server from answering for seconds: wait that out rather
    # than fail a submission (Celery's defaults give up after 4 s, or 3 quick retries).
    broker_connection_timeout=30,
    broker_transport_options={"socket_timeout": 30, "socket_connect_timeout": 30},
    redis_socket_timeout=30,
    redis_socket_connect_timeout=30,
    task_publish_retry_policy={
        "max_retries": 10,
        "interval_start": 0.1,
        "interval_step": 0.5,
        "interval_max": 2,
    },
)


@cache
def _ticket_model() -> LoadedModel:
    # Once per worker process: not at import, since the API processes import this module
    # too (to enqueue) and never run the task.
    return load_model("tickets")


@worker_init.connect
def _load_before_the_first_job(**_: Any) -> None:
    _ticket_model()  # while the worker starts, not while the first job waits


@celery_app.task(name="capstone.score_tickets")
def score_tickets(texts: list[str]) -> list[dict[str, Any]]:
    """Score a job's tickets in one model call."""
    return [answer.model_dump() for answer in predict_tickets(_ticket_model(), texts)]
