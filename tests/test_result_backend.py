"""Step 14's result backend: a late write never replaces a job's final state.

A retrying Celery task sends its next attempt before it records RETRY; on a busy machine
the next attempt can end first, and with Celery's own Redis backend the late RETRY then
hides the outcome for good (a correct solution once lost a graded test so, in CI). These
checks run Celery's backend and the course's on a real server, in the orders that race.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from types import ModuleType

import pytest

from coursekit import redis_server
from tests.helpers import ROOT, STEPS, require_services

STEP = next(step for step in STEPS if step.id == "14")
# Celery's own backend calls redis-py's setex, which redis-py 8 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")


def _given_queue_setup() -> ModuleType:
    # Under a name of its own, in sys.modules as an import would put it: create_celery
    # names its backend class by the module's name.
    name = "step14_given_queue_setup"
    if name not in sys.modules:
        path = ROOT / "exercises" / STEP.slug / "queue_setup.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    require_services(STEP)
    with redis_server.running_server() as running:
        yield running


def _backends(url: str) -> dict[str, object]:
    from celery import Celery

    queue_setup = _given_queue_setup()
    course = queue_setup.create_celery(queue_setup.Settings(redis_url=url, queue="checks"))
    return {
        "celery": Celery("checks", broker=url, backend=url).backend,
        "course": course.backend,
    }


def _late_retry_after(backend, end: str) -> str:
    task = uuid.uuid4().hex
    if end == "SUCCESS":
        backend.mark_as_done(task, [1])
    else:
        backend.mark_as_failure(task, ValueError("the last attempt failed"))
    backend.mark_as_retry(task, ValueError("an earlier attempt, recorded late"))
    return backend.get_state(task)


def test_the_course_backend_is_the_one_create_celery_uses(url):
    backends = _backends(url)
    assert type(backends["course"]).__name__ == "ResultBackend"
    assert type(backends["celery"]).__name__ == "RedisBackend"


@pytest.mark.parametrize("end", ["SUCCESS", "FAILURE"])
def test_a_late_retry_never_replaces_the_end_of_a_job(url, end):
    assert _late_retry_after(_backends(url)["course"], end) == end


def test_celery_s_own_backend_lets_a_late_retry_replace_a_failure(url):
    # What the course's backend is for: if Celery fixes this, the lesson must say so.
    assert _late_retry_after(_backends(url)["celery"], "FAILURE") == "RETRY"


# The read just before the write: Celery's backend reads once (its check for SUCCESS);
# the course's reads that once, then again inside its transaction.
@pytest.mark.parametrize(("kind", "last_read"), [("celery", 1), ("course", 2)])
def test_a_success_written_between_the_check_and_the_write_stays(url, kind, last_read):
    backend = _backends(url)[kind]
    task = uuid.uuid4().hex
    backend.mark_as_started(task)
    decode = backend.decode_result
    other = type(backend)(app=backend.app, url=url)  # another worker's backend
    reads = []

    def read_then_let_the_other_worker_finish(payload):
        reads.append(payload)
        if len(reads) == last_read:
            other.mark_as_done(task, [1])
        return decode(payload)

    backend.decode_result = read_then_let_the_other_worker_finish
    backend.mark_as_retry(task, ValueError("an earlier attempt, recorded late"))
    backend.decode_result = decode
    # Celery's check and write are two round trips: the success is lost between them.
    assert backend.get_state(task) == ("RETRY" if kind == "celery" else "SUCCESS")
    assert len(reads) == last_read + (kind == "course")  # the transaction ran again


def test_progress_and_results_are_still_written(url):
    backend = _backends(url)["course"]
    task = uuid.uuid4().hex
    backend.mark_as_started(task)
    assert backend.get_state(task) == "STARTED"
    backend.mark_as_retry(task, ValueError("the model server blinked"))
    assert backend.get_state(task) == "RETRY"
    backend.mark_as_failure(task, ValueError("the model server did not answer"))
    backend.mark_as_done(task, [{"label": "billing"}])  # a redelivered attempt that ended well
    assert backend.get_state(task) == "SUCCESS"
    assert backend.get_result(task) == [{"label": "billing"}]
    backend.mark_as_failure(task, ValueError("a duplicate that failed"))
    assert backend.get_state(task) == "SUCCESS"
