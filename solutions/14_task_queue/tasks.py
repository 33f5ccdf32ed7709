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

# A worker acknowledges a job only once the job has run, so a worker that dies mid-job
# leaves it unacknowledged in the server, which hands it to another worker once the
# visibility timeout has passed. task_reject_on_worker_lost puts it back at once when a
# prefork pool's child process dies (it has no effect with the solo or threads pools).
celery_app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True)


@celery_app.task(bind=True, name="jobs.score_batch", max_retries=MAX_RETRIES)
def score_batch(self: Task, texts: list[str]) -> list[dict[str, Any]]:
    """Score the batch; what it returns is the job's result in the backend."""
    try:
        predictions = get_scorer(settings)(texts)
    except ScorerUnavailable as error:
        # Another attempt later, up to MAX_RETRIES; past them, the job fails with this error.
        # BatchRejected (and anything else) is not caught: the job fails at once.
        delay = retry_delay(settings, self.request.retries)
        raise self.retry(exc=error, countdown=delay) from error
    # JSON-ready values: the result backend stores JSON, never pickled objects.
    return [prediction.model_dump() for prediction in predictions]
