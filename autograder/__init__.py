"""The course's grader: a pytest plugin that grades each step in a child process.

From a notebook cell: `from autograder import check; check("03")`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autograder.notebook import CheckResult


def check(step_id: str, **options: Any) -> CheckResult:
    """Grade one step from a notebook or a script: see `autograder.notebook.check`."""
    # Imported here, not at the top: the grader's child and plugin import this package
    # too, and need none of the grading machinery this pulls in.
    from autograder.notebook import check as check_step

    return check_step(step_id, **options)
