"""Step 15: the queue. Celery's worker runs `celery -A tasks:celery_app worker`.

This file is a skeleton: `celery_app` must stay (the tests start a worker with it).
"""

from celery import Celery
from contract import Settings

settings = Settings()
celery_app = Celery("capstone", broker=settings.redis_url, backend=settings.redis_url)

# TODO: configure the app and define the task that scores a job's tickets with
# contract.predict_tickets (lesson: "Jobs: idempotency on the queue").
