"""Your test suite for step 12's service (`service.py`, given: read it, do not edit it).

Run it on its own from this folder: `python -m pytest test_service.py --noconftest`.
Grade it with `pytest exercises/12_testing`: the grader runs it against the service and
against versions of it with one bug each (see README.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from service import app

ALICE = {"Authorization": "Bearer alice-key"}  # the two users the service knows
BOB = {"Authorization": "Bearer bob-key"}


@pytest.fixture
def client() -> Iterator[TestClient]:
    # TODO: yield a TestClient that has run the app's lifespan (lesson: "Fixtures for
    # an app with a lifespan"), and clear app.dependency_overrides afterwards.
    raise NotImplementedError


# TODO: write at least 8 tests, each checking one promise of the statement's table
# through HTTP: statuses, fields, bounds at their edges, ownership, the stream's events,
# time with a fake clock, the model taken from its dependency (lesson: "Testing the
# contract: statuses, fields and bounds" and the sections after it).
