"""Render the records: the learner's terminal report and Gradescope's results.json.

Output stays ASCII so it prints the same in every terminal, Windows' included.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from pathlib import Path

from autograder.catalog import Step
from autograder.messages import show_path
from autograder.records import Record

WIDTH = 88


def step_summary(step: Step, records: list[Record], verbose: int = 0) -> str:
    """Lines for one step: each failure with its message, hint and lesson section."""
    passed = sum(record.passed for record in records)
    head = f"{step.id} {step.title}"
    score = f"{sum(r.score for r in records)}/{sum(r.points for r in records)} points"
    lines = [f"{head} ".ljust(WIDTH - len(score) - 1, ".") + f" {score}"]
    failures = [record for record in records if not record.passed]
    if not failures:
        lines.append(f"  all {passed} tests pass")
        return "\n".join(lines)
    if verbose < 1:
        # Tests that stop on the same unwritten function share one line, not a wall of
        # identical messages; so do tests that could not import the module at all.
        for outcome in ("not_implemented", "import_error"):
            same = [record for record in failures if record.outcome == outcome]
            for message in dict.fromkeys(record.message for record in same):
                count = sum(record.message == message for record in same)
                tests = "1 test" if count == 1 else f"{count} tests"
                lines.append(_wrap(f"{message} [{tests}]", "  "))
            failures = [record for record in failures if record.outcome != outcome]
        untouched = all(record.outcome == "not_implemented" for record in records)
        if untouched:
            lines.append(f"  Start with {show_path(step.statement)}")
    for record in failures:
        lines.append(f"  FAIL {record.test} ({_points(record.points)})")
        lines.append(_wrap(record.message, "       "))
        lines.append(_wrap(f"Hint: {record.hint}", "       "))
        lesson = f'Lesson: {show_path(step.lesson)}, section "{record.section}"'
        lines.append(_wrap(lesson, "       "))
    return "\n".join(lines)


def score_table(steps: list[Step], records: list[Record]) -> str:
    """The closing table (one row per step) and, as its last line, `Score: X/Y`."""
    rows = []
    for step in steps:
        mine = [record for record in records if record.step == step.id]
        if not mine:
            continue
        tests = f"{sum(r.passed for r in mine)}/{len(mine)}"
        points = f"{sum(r.score for r in mine)}/{sum(r.points for r in mine)}"
        rows.append((step.id, step.title, tests, points))
    headers = ("Step", "Title", "Tests", "Points")
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(4)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    table = [rule, line(headers), rule, *(line(row) for row in rows), rule]
    table.append(f"Score: {total_score(records)}/{total_points(records)}")
    return "\n".join(table)


def gradescope_results(records: Iterable[Record]) -> dict[str, object]:
    """Gradescope's results.json: the total and one entry per graded test."""
    records = list(records)
    return {
        "score": total_score(records),
        "max_score": total_points(records),
        "visibility": "visible",
        "tests": [
            {
                "name": f"{record.step} {record.step_title}: {record.test}",
                "number": f"{record.step}.{index}",
                "score": record.score,
                "max_score": record.points,
                "status": "passed" if record.passed else "failed",
                "output": record.message if record.passed else _failure_output(record),
            }
            for index, record in enumerate(records, start=1)
        ],
    }


def write_gradescope(records: Iterable[Record], path: Path) -> None:
    path.write_text(json.dumps(gradescope_results(records), indent=2) + "\n", encoding="utf-8")


def total_score(records: Iterable[Record]) -> int:
    return sum(record.score for record in records)


def total_points(records: Iterable[Record]) -> int:
    return sum(record.points for record in records)


def _failure_output(record: Record) -> str:
    text = f"{record.message}\nHint: {record.hint}\nLesson section: {record.section}"
    if record.output:
        text += f"\nYour code printed:\n{record.output}"
    return text


def _points(points: int) -> str:
    return "1 point" if points == 1 else f"{points} points"


def _wrap(text: str, indent: str) -> str:
    return "\n".join(
        textwrap.fill(
            paragraph,
            WIDTH,
            initial_indent=indent,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
        for paragraph in text.strip().splitlines() or [""]
    )
