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
    """Lines for one step: the likely causes first, then each other failure.

    A failure shows its message and the lesson section that teaches it; the code-level
    hint only with `verbose` (`-v`), else `python -m autograder hint NN` gives them.
    """
    head = f"{step.id} {step.title}"
    score = f"{sum(r.score for r in records)}/{sum(r.points for r in records)} points"
    lines = [f"{head} ".ljust(WIDTH - len(score) - 1, ".") + f" {score}"]
    failures = [record for record in records if not record.passed]
    if not failures:
        lines.append(f"  all {len(records)} tests pass")
        return "\n".join(lines)
    if verbose < 1 and all(record.outcome == "not_started" for record in failures):
        edit = ", ".join(f"{module}.py" for module in step.modules if module not in step.given)
        lines.append(f"  Not started: read {show_path(step.statement)}, then edit {edit}.")
        return "\n".join(lines)
    alone = failures
    if verbose < 1:
        alone = []
        for cause, group in _causes(failures):
            if cause is None:
                alone.extend(group)
                continue
            tests = "1 test" if len(group) == 1 else f"{len(group)} tests"
            if group[0].outcome in SELF_EXPLAINING:
                lines.append(wrap(f"{cause} [{tests}]", "  "))
                continue
            lines.append(wrap(f"Likely cause of {tests} failing: {cause}.", "  "))
            lines.append(wrap(f"First seen in {group[0].test}: {group[0].message}", "    "))
            names = ", ".join(record.test for record in group[1:])
            lines.append(wrap(f"Fix it first: {names} stop on it too.", "    "))
            lines.append(wrap(_lesson(step, group[0]), "    "))
    for record in alone:
        lines.append(f"  FAIL {record.test} ({_points(record.points)})")
        lines.append(wrap(record.message, "       "))
        if verbose >= 1:
            lines.append(wrap(f"Hint: {record.hint}", "       "))
        lines.append(wrap(_lesson(step, record), "       "))
    if verbose < 1:
        lines.append(f"  Hints, test by test: python -m autograder hint {step.id}")
    return "\n".join(lines)


# Failures whose message already says what to do: grouped without "likely cause".
SELF_EXPLAINING = ("not_implemented", "import_error", "not_started", "not_run")


def _causes(failures: list[Record]) -> list[tuple[str | None, list[Record]]]:
    """Failures grouped by the cause they share, in order of first appearance.

    Tests stopped on the same unwritten function, the same import error, or the same
    observed symptom (a route answering the same wrong status) form one group; a
    failure that shares its cause with no other stands alone (cause None).
    """
    groups: dict[str, list[Record]] = {}
    for record in failures:
        key = record.symptom or (record.message if record.outcome in SELF_EXPLAINING else "")
        groups.setdefault(key or f"alone:{record.test}", []).append(record)
    causes: list[tuple[str | None, list[Record]]] = []
    for key, group in groups.items():
        shared = not key.startswith("alone:") and (
            len(group) > 1 or group[0].outcome in SELF_EXPLAINING
        )
        causes.append((key if shared else None, group))
    return causes


def _lesson(step: Step, record: Record) -> str:
    return f'Lesson: {show_path(step.lesson)}, section "{record.section}"'


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


def wrap(text: str, indent: str) -> str:
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
