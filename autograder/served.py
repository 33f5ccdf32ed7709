"""`served(app_server, **changes)`: the step's app under a server of the test's own, with
an HTTP client on it, for graded tests that set the app up for themselves."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx


@contextlib.contextmanager
def served(app_server: Any, **changes: Any) -> Iterator[httpx.Client]:
    """Your app, fresh, under a uvicorn server of this test's own (the grader's
    `app_server`), with the course's `patches=` or `setup=` for this test only
    (coursekit/app_setups.py), and an HTTP client for it."""
    with (
        app_server({}, **changes) as base_url,
        httpx.Client(base_url=base_url, timeout=None) as client,
    ):
        yield client
