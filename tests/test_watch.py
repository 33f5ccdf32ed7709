"""`python -m autograder watch`: a save grades the step it belongs to, and says what is next.

Graded for real: real watchfiles on a temporary copy of two steps' stubs, and the real
grader (a child process per grading). Nothing here waits on a clock: each check waits
for the grading the watcher reports, with a limit that only stops a hang.
"""

from __future__ import annotations

import io
import queue
import shutil
import threading
import time
from pathlib import Path

import pytest

from autograder import lastrun
from autograder.catalog import load_catalog
from autograder.records import Record
from autograder.watch import SavedFiles, first_unfinished, report, steps_changed, watch
from tests.helpers import ROOT

CATALOG = load_catalog()
FIRST, SECOND = CATALOG.steps[0], CATALOG.steps[1]
HANG = 120.0  # seconds: a grading that takes longer has hung


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A learner's exercises folder with the stubs of the first two steps, and its own last run."""
    monkeypatch.setattr(lastrun, "LAST_RUN_FILE", tmp_path / "state" / "last-run.json")
    folder = tmp_path / "exercises"
    for step in (FIRST, SECOND):
        shutil.copytree(
            step.exercise_dir, folder / step.slug, ignore=shutil.ignore_patterns("test_*")
        )
    return folder


def test_a_save_is_mapped_to_its_step(root: Path) -> None:
    app = root / FIRST.slug / "app.py"
    other = root / SECOND.slug / "schemas.py"
    assert steps_changed(CATALOG, root, [str(other), str(app)]) == [FIRST, SECOND]
    assert steps_changed(CATALOG, root, [str(root / FIRST.slug / "notes.txt")]) == []
    assert steps_changed(CATALOG, root, [str(ROOT / "README.md")]) == []


def test_the_first_unfinished_step_is_watched_by_default(root: Path) -> None:
    assert first_unfinished(CATALOG, root) == FIRST
    passed = [
        Record(
            step=FIRST.id,
            step_title=FIRST.title,
            test=t.name,
            points=t.points,
            score=t.points,
            outcome="passed",
            message="",
            hint=t.hint,
            section=t.section,
        )
        for t in FIRST.tests
    ]
    lastrun.remember(FIRST, root / FIRST.slug, passed)
    assert first_unfinished(CATALOG, root) == SECOND
    text = report(FIRST, passed, CATALOG)
    assert f"Step {FIRST.id} is done. Next: step {SECOND.id}" in text


def assert_graded_in_the_end(graded: queue.Queue[tuple[str, int]], step: str, points: int) -> None:
    """The save is graded at `points` within HANG. A grading of the same step that scored
    less may come first: a file event can arrive late, or while the copy was half
    written (seen once in a fresh-clone check: step 01 graded 0, then 18)."""
    deadline = time.monotonic() + HANG
    seen = []
    while (got := graded.get(timeout=max(0.0, deadline - time.monotonic()))) != (step, points):
        assert got[0] == step and got[1] < points, (got, seen)
        seen.append(got)


def test_saving_a_step_grades_it_and_full_points_name_the_next(root: Path) -> None:
    graded: queue.Queue[tuple[str, int]] = queue.Queue()
    stop = threading.Event()
    out = io.StringIO()

    def on_graded(step, records) -> None:  # type: ignore[no-untyped-def]
        graded.put((step.id, sum(record.score for record in records)))

    watcher = threading.Thread(
        target=watch,
        kwargs={
            "step_id": FIRST.id,
            "root": root,
            "changes": SavedFiles(root, stop),
            "out": out,
            "clear": False,
            "on_graded": on_graded,
        },
        daemon=True,
    )
    watcher.start()
    try:
        assert graded.get(timeout=HANG) == (FIRST.id, 0), "the stub of step 01 scores 0 at start"
        assert "Not started" in out.getvalue()

        shutil.copy(FIRST.solution_dir / "app.py", root / FIRST.slug / "app.py")
        assert_graded_in_the_end(graded, FIRST.id, FIRST.max_points)
        assert f"Step {FIRST.id} is done. Next: step {SECOND.id}" in out.getvalue()

        learner_file = next(m for m in SECOND.modules if m not in SECOND.given)
        shutil.copy(
            SECOND.solution_dir / f"{learner_file}.py", root / SECOND.slug / f"{learner_file}.py"
        )
        assert_graded_in_the_end(graded, SECOND.id, SECOND.max_points)
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert not watcher.is_alive(), "the watcher did not stop when asked"
    # What it graded is the last run, so `next` and `hint` answer without grading again.
    assert lastrun.recall(FIRST, root / FIRST.slug) is not None
