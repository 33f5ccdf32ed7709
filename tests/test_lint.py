"""The course's own code is lint-clean and formatted (ruff, configured in pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys

from autograder.catalog import load_catalog
from tests.helpers import ROOT, edited_steps


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    # A learner's work in exercises/ is theirs to format; the course's code, the shipped
    # stubs included, is linted everywhere, and everything is on CI.
    edited = [] if os.environ.get("CI") else edited_steps()
    excluded = [f"--extend-exclude=exercises/{step.slug}" for step in edited]
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *excluded],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_ruff_check_passes() -> None:
    result = ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied() -> None:
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_graded_tests_import_only_what_they_use() -> None:
    # pyproject.toml lets exercises/ keep unused imports, for the stubs' sake (the learner
    # will use them); a graded test file is the course's, and an import it no longer uses
    # is a leftover (steps' tests moved apart from the app left a dozen).
    learners = {(s.slug, f"{m}.py") for s in load_catalog().steps for m in s.modules}
    graded = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "exercises").glob("*/test_*.py"))
        if (path.parent.name, path.name) not in learners
    ]
    result = ruff("check", "--isolated", "--select", "F401", *graded)
    assert result.returncode == 0, result.stdout + result.stderr
