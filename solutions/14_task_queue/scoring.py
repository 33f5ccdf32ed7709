"""Step 14: the scorer a worker runs, and the two ways it can fail (given: read it, do not
edit it).

- `ScorerUnavailable`: the model could not be reached this time (a model server
  restarting, a timeout); the same batch may well work a moment later: retry it.
- `BatchRejected`: this batch can never be scored (the model refuses it); retrying only
  wastes workers: fail the job at once, with the error.
- `get_scorer(settings)`: this process's scorer, made on first use and kept: the tickets
  model (`TicketScorer`), or with `JOBS_SCORER=drill` the `DrillScorer`, the same model
  behind failures and holds that a batch's texts ask for (the tests and the lesson use it).
"""

import hashlib
import os
import threading

import redis
from job_schemas import Prediction
from queue_setup import Settings

from coursekit.models import LoadedModel, load_model

HOLD_TIMEOUT = 30.0  # seconds a held call waits for its gate before it goes on anyway


class ScorerUnavailable(Exception):
    """The model could not score the batch this time; a later attempt may work."""


class BatchRejected(Exception):
    """The model refuses this batch, and always will."""


class TicketScorer:
    """Labels tickets with the tickets model: the most probable class and its probability."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def __call__(self, texts: list[str]) -> list[Prediction]:
        probabilities = self.model.pipeline.predict_proba(texts)
        return [
            Prediction(label=self.model.classes[int(row.argmax())], confidence=float(row.max()))
            for row in probabilities
        ]


def drill_key(settings: Settings, kind: str, batch: list[str]) -> str:
    """The server key where the drill keeps `kind` ("calls", "started", "gate") for a batch.

    A batch is named by its first text, so a test (or a lesson cell) that starts its batch
    with a text of its own has counters and gates of its own.
    """
    name = hashlib.sha256(batch[0].encode()).hexdigest()[:16]
    return f"{settings.queue}:drill:{kind}:{name}"


class DrillScorer:
    """The tickets model, with failures and holds that the batch's texts ask for.

    Every call counts itself (INCR of `drill_key(settings, "calls", texts)`); then, if a
    text holds
    - `#unavailable:N`: the first N calls with this batch raise ScorerUnavailable;
    - `#reject`: the call raises BatchRejected;
    - `#hold`: the call pushes its process id onto `drill_key(..., "started", texts)` and
      waits until `drill_key(..., "gate", texts)` holds a value (`open_gate`), at most
      HOLD_TIMEOUT seconds.
    Otherwise (and after a hold) it returns the tickets model's predictions. The counts
    and gates live in the server, so a test sees what every worker process did.
    """

    def __init__(self, settings: Settings, model: TicketScorer) -> None:
        self.settings = settings
        self.model = model
        # No socket timeout shorter than a hold (redis-py's default is 5 s).
        self.client = redis.Redis.from_url(settings.redis_url, socket_timeout=HOLD_TIMEOUT + 5)

    def __call__(self, texts: list[str]) -> list[Prediction]:
        calls = self.client.incr(drill_key(self.settings, "calls", texts))
        joined = " ".join(texts)
        for word in joined.split():
            if word.startswith("#unavailable:") and calls <= int(word.split(":", 1)[1]):
                raise ScorerUnavailable(f"the model server did not answer (call {calls})")
        if "#reject" in joined:
            raise BatchRejected("the model refuses this batch: it holds #reject")
        if "#hold" in joined:
            self.client.rpush(drill_key(self.settings, "started", texts), os.getpid())
            gate = drill_key(self.settings, "gate", texts)
            # BLMOVE from a list to itself waits until the list holds a value and leaves it
            # there: once opened, the gate stays open for every later call.
            self.client.blmove(gate, gate, HOLD_TIMEOUT, "RIGHT", "LEFT")
        return self.model(texts)


def open_gate(client: redis.Redis, settings: Settings, batch: list[str]) -> None:
    """Let every held call of this batch go on, now and later."""
    client.rpush(drill_key(settings, "gate", batch), "open")


_scorers: dict[tuple[str, str, str], TicketScorer | DrillScorer] = {}
_making = threading.Lock()


def get_scorer(settings: Settings) -> TicketScorer | DrillScorer:
    """This process's scorer for these settings: made (the model loaded) once, then reused."""
    key = (settings.scorer, settings.redis_url, settings.queue)
    with _making:
        if key not in _scorers:
            model = TicketScorer(load_model("tickets"))
            _scorers[key] = model if settings.scorer == "tickets" else DrillScorer(settings, model)
        return _scorers[key]
