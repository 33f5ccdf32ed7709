"""The grader's small CLI: hint, next, grade."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT, STEPS, require_shipped_stubs


def autograder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autograder", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_hint_shows_the_hints_of_the_failing_tests() -> None:
    step = STEPS[0]
    require_shipped_stubs(step)
    result = autograder("hint", step.id)
    assert result.returncode == 0, result.stderr
    assert f"exercises/{step.slug}/README.md" in result.stdout
    for test in step.tests:  # every test fails on the pristine stub
        assert test.hint.split()[0] in result.stdout
        assert test.name in result.stdout


def test_next_names_the_first_step_not_at_full_points() -> None:
    require_shipped_stubs(*STEPS)
    result = autograder("next")
    assert result.returncode == 0, result.stderr
    first = STEPS[0]
    assert f"Next: step {first.id}" in result.stdout
    assert f"exercises/{first.slug}/README.md" in result.stdout


def test_grade_one_step_of_the_solutions_writes_results(tmp_path) -> None:  # type: ignore[no-untyped-def]
    results = tmp_path / "results.json"
    result = autograder("grade", STEPS[0].id, "--solutions", "--json", str(results))
    assert result.returncode == 0, result.stdout
    assert (
        result.stdout.rstrip().splitlines()[-1]
        == f"Score: {STEPS[0].max_points}/{STEPS[0].max_points}"
    )
    assert results.exists()


def test_an_unknown_step_is_a_clear_error() -> None:
    result = autograder("hint", "99")
    assert result.returncode != 0
    assert "no step '99'" in result.stderr
