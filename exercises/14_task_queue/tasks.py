"""Step 14: the job a worker runs, and how the workers take jobs from the queue.

Read README.md in this folder first: it states what each part must do.
Grade your work with `pytest exercises/14_task_queue`.

Given, in modules you import and do not edit: the settings and the Celery app
(`queue_setup.py`), the scorer and its errors (`scoring.py`), the schemas (`job_schemas.py`).
Yours, in this file: the workers' acknowledgement settings and the task `score_batch`.
A worker runs this module: `celery -A tasks worker --pool=threads` in this folder.
"""

from typing import Any

from celery import Task
from queue_setup import MAX_RETRIES, Settings, create_celery, retry_delay
from scoring import BatchRejected, ScorerUnavailable, get_scorer

__all__ = ["BatchRejected", "celery_app", "score_batch", "settings"]

# Read once, when a worker or an API process imports this module (the tests set JOBS_*
# before they import it).
settings = Settings()
celery_app = create_celery(settings)

# TODO: make a job whose worker dies mid-job come back to the queue: a worker must
# acknowledge a job only once it has run, and give it back if its pool process dies
# (lesson: "Acks late: a killed worker's job comes back").
celery_app.conf.update()


# TODO: let the task retry itself, at most MAX_RETRIES times (lesson: "Retries with
# backoff, and dead ends"). Keep its name: the API sends "jobs.score_batch".
@celery_app.task(bind=True, name="jobs.score_batch")
def score_batch(self: Task, texts: list[str]) -> list[dict[str, Any]]:
    # TODO: score the texts with get_scorer(settings) and return the predictions as plain
    # dicts (the result backend stores JSON). When the scorer raises ScorerUnavailable,
    # retry after retry_delay(settings, <the retries so far>), with that error; anything
    # else (BatchRejected) must fail the job at once (lesson: "Retries with backoff, and
    # dead ends").
    raise NotImplementedError
