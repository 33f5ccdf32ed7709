"""Grading from a notebook cell: `from autograder import check; check("03")`.

The same grading as `pytest exercises/03_...`: a child process runs the step's tests on
the learner's files, so a hanging or crashing exercise cannot take the kernel with it.
The result shows itself as a compact report in Jupyter (HTML) and as text elsewhere.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from autograder.catalog import Step, load_catalog
from autograder.engine import Settings, grade
from autograder.lastrun import remember
from autograder.messages import show_path
from autograder.records import Record
from autograder.reports import step_summary


@dataclass(frozen=True, repr=False)
class CheckResult:
    """One step graded: its records, the score, and the report to show."""

    step: Step
    records: list[Record] = field(repr=False)

    @property
    def score(self) -> int:
        return sum(record.score for record in self.records)

    @property
    def max_points(self) -> int:
        return sum(record.points for record in self.records)

    @property
    def passed(self) -> bool:
        return all(record.passed for record in self.records)

    def report(self) -> str:
        """The terminal report of the step: likely causes first, nudges, no hints."""
        return step_summary(self.step, self.records)

    def __repr__(self) -> str:  # what a console shows for `check("03")`
        return self.report()

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else "#b35900"
        title = html.escape(f"Step {self.step.id} · {self.step.title}")
        score = f"{self.score}/{self.max_points} points"
        next_line = (
            "Every test passes: on to the next step."
            if self.passed
            else f"Code-level hints: <code>python -m autograder hint {self.step.id}</code>"
        )
        body = html.escape(self.report())
        return (
            f'<div style="border-left: 4px solid {colour}; padding: 0.4em 0.8em">'
            f"<strong>{title}</strong> — "
            f'<strong style="color: {colour}">{score}</strong>'
            f'<pre style="white-space: pre-wrap; margin: 0.5em 0">{body}</pre>'
            f"<small>{next_line}</small></div>"
        )


def check(step_id: str, *, solutions: bool = False, source: Path | None = None) -> CheckResult:
    """Grade one step of your exercises (or the reference solution) and return the result.

    `step_id` is a step id such as "03" (or its folder name). The run is saved as the last
    run, as `pytest exercises/` saves it, so `python -m autograder hint 03` answers at once.
    """
    step = load_catalog().step(step_id)
    folder = source or (step.solution_dir if solutions else step.exercise_dir)
    records = grade([step], Settings(source=lambda step: folder))
    if not solutions and source is None:
        remember(step, folder, records)
    print(f"Graded {show_path(folder)}")
    return CheckResult(step, records)
