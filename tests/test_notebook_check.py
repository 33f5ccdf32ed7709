"""Grading from a notebook: `from autograder import check; check("01")` in a real kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from autograder import check
from autograder.catalog import load_catalog

FIRST = load_catalog().steps[0]


def test_a_cell_grades_a_step_and_shows_a_compact_report(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            f'from autograder import check\nresult = check("{FIRST.id}", solutions=True)\nresult'
        ),
        nbformat.v4.new_code_cell("print(result.score, result.max_points)"),
    ]
    # The kernel starts in a lesson's folder, as JupyterLab starts it.
    client = NotebookClient(
        notebook, timeout=300, resources={"metadata": {"path": str(FIRST.lesson_dir)}}
    )
    client.execute()
    shown = notebook.cells[0].outputs[-1]["data"]
    assert f"{FIRST.max_points}/{FIRST.max_points} points" in shown["text/html"]
    printed = "".join(output.get("text", "") for output in notebook.cells[1].outputs)
    assert printed.split() == [str(FIRST.max_points), str(FIRST.max_points)]


def test_an_exercise_that_kills_its_process_costs_its_points_not_the_caller(tmp_path: Path) -> None:
    folder = tmp_path / FIRST.slug
    folder.mkdir()
    (folder / "app.py").write_text("import os\nos._exit(3)\n", encoding="utf-8")
    result = check(FIRST.id, source=folder)  # the caller (here pytest, there a kernel) lives on
    assert result.score == 0 and result.max_points == FIRST.max_points
    assert "app.py" in result.report()


def test_the_report_escapes_what_the_learner_wrote(tmp_path: Path) -> None:
    folder = tmp_path / FIRST.slug
    folder.mkdir()
    (folder / "app.py").write_text('raise RuntimeError("<script>x</script>")\n', encoding="utf-8")
    result = check(FIRST.id, source=folder)
    assert "<script>" in result.report()
    assert "<script>" not in result._repr_html_()
    assert "&lt;script&gt;" in result._repr_html_()
