"""Reports for the platforms classes use, each rendered from the grader's records.

`reports.py` renders the terminal report and Gradescope's results.json; the modules
here render GitHub Classroom's reporter input and Exercism's results v3, build the
Gradescope autograder zip and grade a whole class. One record per test is the only
source: every format agrees with the score table by construction.
"""

from __future__ import annotations

import ast
import base64
import json
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from autograder.catalog import Step
from autograder.records import Record
from autograder.reports import gradescope_results, total_points, total_score

FORMATS = ("gradescope", "classroom", "exercism")

# Outcomes that mean the test never got to run the learner's code: a step whose every
# record is one of these "did not run" (Exercism's status "error", with a message).
NOTHING_RAN = ("import_error", "not_run")


@cache
def test_sources(step: Step) -> dict[str, tuple[int, str, str]]:
    """Each graded test's line, source and file, from the course's own test files."""
    found: dict[str, tuple[int, str, str]] = {}
    for path in sorted(step.exercise_dir.glob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                # The decorators too: a parametrised test's cases are part of its code.
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = text.splitlines()[first - 1 : node.end_lineno]
                source = "\n".join(lines)
                where = f"exercises/{step.slug}/{path.name}"
                found.setdefault(node.name, (node.lineno, source, where))
    return found


def _in_file_order(records: Iterable[Record], steps: Sequence[Step]) -> list[Record]:
    """Records by step (course order), then by where the test is defined in its file."""
    order = {step.id: index for index, step in enumerate(steps)}
    by_id = {step.id: step for step in steps}

    def key(record: Record) -> tuple[int, int]:
        line = _where(by_id[record.step], record)[0]
        return order.get(record.step, len(order)), line

    return sorted(records, key=key)


def _test_status(record: Record) -> str:
    if record.passed:
        return "pass"
    if record.outcome in ("failed", "not_implemented", "not_started"):
        return "fail"  # the learner's code ran and answered wrongly (or not yet)
    return "error"  # it could not be imported, crashed, hung or raised


def _nothing_ran(records: list[Record]) -> bool:
    if not records:
        return True
    if all(record.outcome in NOTHING_RAN for record in records):
        return True
    # An import that hung or crashed stops every test with the same message.
    first = records[0]
    return first.outcome in ("timeout", "crashed") and all(
        record.outcome == first.outcome and record.message == first.message for record in records
    )


def _message(record: Record) -> str:
    text = record.message
    if record.section:
        text += f"\nLesson section: {record.section}"
    return text


def classroom_result(records: Iterable[Record], steps: Sequence[Step]) -> dict[str, object]:
    """The result GitHub Classroom's reporter decodes for one runner (one course step).

    The reporter sums `tests[].score` and `max_score` over its runners and fails the
    job when a runner's `status` is "fail" or "error"; each test scores its points
    from course.toml, so a step earns partial credit.
    """
    records = _in_file_order(records, steps)
    failed = any(not record.passed for record in records)
    status = "error" if _nothing_ran(records) else "fail" if failed else "pass"
    return {
        "version": 1,
        "status": status,
        "max_score": total_points(records),
        "tests": [
            {
                "name": f"{record.step} {record.test}",
                "status": _test_status(record),
                "score": record.score,
                "message": "" if record.passed else _message(record),
                "test_code": _where(_step(steps, record), record)[1],
                "filename": _where(_step(steps, record), record)[2],
                "line_no": _where(_step(steps, record), record)[0],
                "duration": round(record.duration * 1000),
            }
            for record in records
        ],
    }


def encode_classroom(result: dict[str, object]) -> str:
    """The reporter's input: the result as base64 of its JSON (one line, no padding lost)."""
    return base64.b64encode(json.dumps(result).encode("utf-8")).decode("ascii")


def exercism_results(records: Iterable[Record], steps: Sequence[Step]) -> dict[str, object]:
    """Exercism's test-runner results, version 3 (tests in file order, task_id = step)."""
    records = _in_file_order(records, steps)
    if _nothing_ran(records):
        message = records[0].message if records else "No graded test was selected."
        return {"version": 3, "status": "error", "message": message[:65535], "tests": []}
    tests = []
    for record in records:
        test: dict[str, object] = {
            "name": f"{record.step} {record.step_title}: {record.test}",
            "status": _test_status(record),
            "test_code": _where(_step(steps, record), record)[1],
            "task_id": int(record.step) if record.step.isdigit() else record.step,
        }
        if not record.passed:
            test["message"] = _message(record)[:65535]
        if record.output:
            test["output"] = record.output[:500]  # Exercism's limit for printed output
        tests.append(test)
    status = "pass" if all(record.passed for record in records) else "fail"
    return {"version": 3, "status": status, "tests": tests}


def _where(step: Step, record: Record) -> tuple[int, str, str]:
    """Where a record's test is defined (line 0 and no code if it cannot be found)."""
    return test_sources(step).get(record.test, (0, "", ""))


def _step(steps: Sequence[Step], record: Record) -> Step:
    return next(step for step in steps if step.id == record.step)


def render(fmt: str, records: list[Record], steps: Sequence[Step]) -> dict[str, object]:
    if fmt == "gradescope":
        return gradescope_results(records)
    if fmt == "classroom":
        return classroom_result(records, steps)
    if fmt == "exercism":
        return exercism_results(records, steps)
    raise ValueError(f"unknown report format {fmt!r} (known: {', '.join(FORMATS)})")


def write_report(fmt: str, records: list[Record], steps: Sequence[Step], path: Path) -> None:
    data = render(fmt, records, steps)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def append_github_output(result: dict[str, object], path: Path, name: str = "result") -> None:
    """Append `name=<base64 JSON>` to a step's $GITHUB_OUTPUT file, as the graders do."""
    with path.open("a", encoding="utf-8") as output:
        output.write(f"{name}={encode_classroom(result)}\n")


__all__ = [
    "FORMATS",
    "append_github_output",
    "classroom_result",
    "encode_classroom",
    "exercism_results",
    "render",
    "test_sources",
    "total_score",
    "write_report",
]
