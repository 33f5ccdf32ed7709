"""Every lesson runs top to bottom, offline, with no error; git holds no outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder.catalog import Step
from tests.helpers import STEPS, require_services, step_ids


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_the_lesson_is_stored_without_outputs(step: Step) -> None:
    notebook = json.loads(step.lesson.read_text(encoding="utf-8"))
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {index} has outputs: strip them before committing"
            assert cell["execution_count"] is None, f"cell {index} has an execution count"


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_the_lesson_executes_without_error(step: Step) -> None:
    from coursekit.notebooks import execute_notebook

    require_services(step)  # a lesson that starts a server runs where one can

    executed = execute_notebook(step.lesson)
    notebook = json.loads(executed.read_text(encoding="utf-8"))
    errors = [
        output
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, errors
    # The course teaches today's APIs: a lesson that triggers a deprecation is out of date.
    warnings = [
        "".join(output.get("text", ""))
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
        for output in cell.get("outputs", [])
        if output.get("name") == "stderr" and "Warning" in "".join(output.get("text", ""))
    ]
    assert not warnings, warnings


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_the_lesson_is_as_the_pre_commit_hook_leaves_it(step: Step, tmp_path: Path) -> None:
    """nbstripout (the pre-commit hook) would change nothing: no outputs, no stray metadata."""
    copy = tmp_path / step.lesson.name
    shutil.copy(step.lesson, copy)
    subprocess.run([sys.executable, "-m", "nbstripout", "--keep-id", str(copy)], check=True)
    assert copy.read_bytes() == step.lesson.read_bytes(), (
        f"run `python -m nbstripout --keep-id {step.lesson.relative_to(step.lesson.parents[2])}`"
    )
