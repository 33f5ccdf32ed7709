"""Every solution app answers only what its OpenAPI document says it can answer.

Schemathesis reads each app's `/openapi.json`, generates requests from it, valid ones
and invalid ones, and sends them to the app under a real uvicorn server. A route must
never answer 500, and every answer must have a status code, a content type, headers
and a body that the document declares for that route: a learner who reads `/docs`
learns the truth. Checks that need more than the schema can say (a cross-field rule such
as "nonflavanoid phenols are part of total phenols" rejects requests the schema allows)
are left out; the graded tests hold those rules.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import schemathesis
import schemathesis.specs.openapi.checks as openapi_checks
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from coursekit.server import serve_in_thread
from coursekit.upstream import make_upstream, running_upstreams
from tests.helpers import STEPS, require_services
from tests.test_offline_docs import load_app

CHECKS = [
    not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
]
EXAMPLES = 25  # per route and generation mode: enough to reach every documented branch
API_KEY = "contract-key"


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# Per step: what an operator would set before starting the service. Each yields the
# headers a client sends (the API key where the step has one).
Setup = Callable[[ExitStack, Path], dict[str, str]]


def _predictor(stack: ExitStack, tmp: Path) -> dict[str, str]:
    stack.enter_context(
        environment(
            {
                "PREDICTOR_API_KEYS": json.dumps([API_KEY]),
                "PREDICTOR_DATABASE_PATH": str(tmp / "predictions.sqlite3"),
            }
        )
    )
    return {"Authorization": f"Bearer {API_KEY}"}


def _ensemble(stack: ExitStack, tmp: Path) -> dict[str, str]:
    urls = stack.enter_context(
        running_upstreams(make_upstream("a", delay=0.0), make_upstream("b", delay=0.0))
    )
    stack.enter_context(environment({"ENSEMBLE_UPSTREAM_URLS": json.dumps(list(urls.values()))}))
    return {}


def _jobs(stack: ExitStack, tmp: Path) -> dict[str, str]:
    stack.enter_context(environment({"JOBS_DATABASE_PATH": str(tmp / "jobs.sqlite3")}))
    return {}


def _chat(stack: ExitStack, tmp: Path) -> dict[str, str]:
    stack.enter_context(
        environment(
            {
                "CHAT_API_KEYS": json.dumps({"alice": API_KEY}),
                "CHAT_DATABASE_PATH": str(tmp / "chat.sqlite3"),
            }
        )
    )
    return {"Authorization": f"Bearer {API_KEY}"}


def _compatible(stack: ExitStack, tmp: Path) -> dict[str, str]:
    stack.enter_context(environment({"COMPAT_API_KEY": API_KEY}))
    return {"Authorization": f"Bearer {API_KEY}"}


def _production(stack: ExitStack, tmp: Path) -> dict[str, str]:
    database = tmp / "service.db"
    database.touch()  # an empty file is a SQLite database that answers: ready once loaded
    # A rate limit schemathesis does not reach, so its requests also get past it.
    values = {"SERVICE_DATABASE_PATH": str(database), "SERVICE_RATE_LIMIT": "100000/minute"}
    stack.enter_context(environment(values))
    return {}


def _task_queue(stack: ExitStack, tmp: Path) -> dict[str, str]:
    from coursekit.redis_server import running_server

    url = stack.enter_context(running_server())
    # A queue of its own: a server named in COURSE_REDIS_URL may serve others' runs too.
    stack.enter_context(environment({"JOBS_REDIS_URL": url, "JOBS_QUEUE": f"contract-{tmp.name}"}))
    return {}


def _capstone(stack: ExitStack, tmp: Path) -> dict[str, str]:
    import json

    from coursekit.redis_server import running_server

    url = stack.enter_context(running_server())
    # A key of its own and a limit schemathesis does not reach, so it gets past both.
    keys = {API_KEY: {"user": f"contract-{tmp.name}", "rate_limit": "100000/minute"}}
    stack.enter_context(
        environment({"CAPSTONE_REDIS_URL": url, "CAPSTONE_API_KEYS": json.dumps(keys)})
    )
    return {"Authorization": f"Bearer {API_KEY}"}


SETUPS: dict[str, Setup] = {
    "05_dependency_injection": _predictor,
    "06_async_concurrency": _ensemble,
    "07_background_jobs": _jobs,
    "09_chat_sessions": _chat,
    "10_openai_api": _compatible,
    "13_production": _production,
    "14_task_queue": _task_queue,
    "15_capstone": _capstone,
}


# Steps whose app serves before it is ready (it loads its model in the background): the
# check starts once this path answers 200, as a load balancer would send traffic.
READY: dict[str, str] = {"13_production": "/health/ready", "15_capstone": "/health/ready"}


def _wait_until_ready(url: str, timeout: float = 60.0) -> None:
    # Generous: loading the model takes seconds on a busy machine; this only stops a hang.
    deadline = time.monotonic() + timeout
    while httpx2.get(url).status_code != 200:
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {timeout} s"
        time.sleep(0.01)


def _failures(base_url: str, headers: dict[str, str]) -> list[str]:
    """Run every check on every operation; one line per distinct failure."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    found: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,  # the same requests on every run: a failure reproduces
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                check()
            except Unsatisfiable:
                continue  # no invalid request exists (a GET without parameters)
            except (AssertionError, FailureGroup) as error:  # its text is the report
                first = str(error).strip().splitlines()
                summary = next((line for line in first if line.startswith("- ")), first[0])
                found.setdefault(f"{operation.label}: {summary}", str(error)[:1500])
    return [f"{key}\n{detail}" for key, detail in found.items()]


@pytest.mark.parametrize("step", STEPS, ids=[step.slug for step in STEPS])
def test_every_answer_is_documented(step: Any, tmp_path: Path) -> None:
    require_services(step)
    module, _, attribute = step.app.partition(":")
    assert attribute == "app", "load_app imports `app` from the step's module"
    with ExitStack() as stack:
        headers = SETUPS.get(step.slug, lambda *_: {})(stack, tmp_path)
        app = load_app(step.solution_dir / f"{module}.py")
        base_url = stack.enter_context(serve_in_thread(app))
        if step.slug in READY:
            _wait_until_ready(f"{base_url}{READY[step.slug]}")
        failures = _failures(base_url, headers)
    assert not failures, f"{step.slug}: answers its OpenAPI document does not declare:\n\n" + (
        "\n\n".join(failures)
    )
