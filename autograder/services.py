"""The servers a step's tests need besides the learner's app (course.toml's `services`).

A step graded where its server cannot run would fail every test with a connection
error that says nothing about the cause. Checked here first, such a step scores zero
with one plain sentence of what to do (on Windows: start a server, name it in
COURSE_REDIS_URL), and no learner code runs.
"""

from __future__ import annotations

import os

from autograder.catalog import Step
from coursekit import redis_server  # imported before any submission runs (integrity.py)

KNOWN = ("redis",)


def missing(step: Step) -> str | None:
    """Why a server `step` needs is not there, or None when all of them are."""
    if "redis" not in step.services:
        return None
    if not redis_server.available():
        return redis_server.NO_SERVER
    named = os.environ.get(redis_server.ENV, "").strip()
    if named:
        try:
            redis_server._ping(named)
        except redis_server.NoServerError as error:
            return str(error)
    return None
