"""Both directions, through the learner's own command: solutions pass, stubs fail."""

from __future__ import annotations

import re

import pytest

from autograder.catalog import Step
from tests.helpers import STEPS, GradingRun, require_services, require_shipped_stubs, step_ids


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_every_solution_scores_full_points(solutions_run: GradingRun, step: Step) -> None:
    require_services(step)
    tests = solutions_run.tests_of(step)
    assert len(tests) == len(step.tests), solutions_run.stdout
    failing = {test["name"]: test["output"] for test in tests if test["status"] != "passed"}
    assert not failing, f"the solution of step {step.id} fails: {failing}"


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_every_pristine_stub_scores_zero(stubs_run: GradingRun, step: Step) -> None:
    require_shipped_stubs(step)
    tests = stubs_run.tests_of(step)
    assert len(tests) == len(step.tests), stubs_run.stdout
    passing = [test["name"] for test in tests if test["status"] == "passed"]
    assert not passing, f"a stub passes these graded tests (each is a bug): {passing}"


def test_the_runs_end_with_the_score_line(solutions_run: GradingRun, stubs_run: GradingRun) -> None:
    require_shipped_stubs(*STEPS)
    require_services(*STEPS)
    total = sum(step.max_points for step in STEPS)
    assert solutions_run.stdout.rstrip().splitlines()[-1] == f"Score: {total}/{total}"
    assert stubs_run.stdout.rstrip().splitlines()[-1] == f"Score: 0/{total}"
    assert solutions_run.returncode == 0
    assert stubs_run.returncode == 1


def test_the_table_has_one_row_per_step(stubs_run: GradingRun) -> None:
    rows = [line for line in stubs_run.stdout.splitlines() if re.match(r"\| \d\d ", line)]
    assert [row.split("|")[1].strip() for row in rows] == [step.id for step in STEPS]


def test_results_json_is_in_gradescope_format(stubs_run: GradingRun) -> None:
    results = stubs_run.results
    assert results["score"] == 0
    assert results["max_score"] == sum(step.max_points for step in STEPS)
    assert len(results["tests"]) == sum(len(step.tests) for step in STEPS)
    for test in results["tests"]:
        assert set(test) >= {"name", "score", "max_score", "status", "output"}
        assert test["status"] in {"passed", "failed"}
        assert test["output"], "a failed test must tell the learner why"
