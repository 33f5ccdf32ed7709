"""Fixtures shared by the course's own checks."""

from __future__ import annotations

import pytest

from tests.helpers import GradingRun, run_pytest_exercises


@pytest.fixture(scope="session")
def solutions_run(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    return run_pytest_exercises(tmp_path_factory.mktemp("solutions"), "--solutions")


@pytest.fixture(scope="session")
def stubs_run(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    return run_pytest_exercises(tmp_path_factory.mktemp("stubs"))
