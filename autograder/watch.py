"""`python -m autograder watch [NN]`: grade the step you are editing at every save.

The loop a rustlings user knows: the screen shows one step's report, cause first; save a
file of a step and that step is graded again; at full points the report names the next
step, and saving in the next step's folder goes on from there. Each grading is the usual
one (a child process per step, killed on a hang), and its records are saved as the last
run, so `python -m autograder next` and `hint NN` answer at once afterwards.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

from autograder.catalog import Catalog, Step, load_catalog
from autograder.engine import Settings, grade
from autograder.lastrun import recall, remember
from autograder.messages import show_path
from autograder.records import Record
from autograder.reports import step_summary

CLEAR = "\033[2J\033[H"  # ANSI: clear the screen, cursor home

Changes = Iterable[Iterable[str]]  # each item: the paths one save (or several) changed


def first_unfinished(catalog: Catalog, root: Path) -> Step:
    """The first step whose last saved run is not at full points (else the last step)."""
    for step in catalog.steps:
        records = recall(step, root / step.slug)
        if records is None or any(not record.passed for record in records):
            return step
    return catalog.steps[-1]


def steps_changed(catalog: Catalog, root: Path, paths: Iterable[str]) -> list[Step]:
    """The steps whose folder under `root` holds one of `paths`, in course order."""
    folders = {step.slug: step for step in catalog.steps}
    touched = set()
    for path in paths:
        try:
            relative = Path(path).resolve().relative_to(root.resolve())
        except ValueError:
            continue
        if relative.parts and relative.parts[0] in folders and relative.suffix == ".py":
            touched.add(relative.parts[0])
    return [step for step in catalog.steps if step.slug in touched]


def report(step: Step, records: list[Record], catalog: Catalog) -> str:
    """The screen for one grading: the step's report, then what to do next."""
    lines = [step_summary(step, records), ""]
    earned = sum(record.score for record in records)
    if earned == step.max_points:
        later = [s for s in catalog.steps if s.id > step.id]
        if later:
            following = later[0]
            lines.append(f"Step {step.id} is done. Next: step {following.id}, {following.title}.")
            lines.append(f"  Read {show_path(following.statement)}, then save a file of it.")
        else:
            lines.append("Every step is done. Congratulations: the course is complete.")
    else:
        lines.append(f"Save a file of step {step.id} to grade it again.")
        lines.append(f"  Code-level hints: python -m autograder hint {step.id}")
    lines.append("Watching for changes; Ctrl-C stops.")
    return "\n".join(lines)


def watch(
    step_id: str | None = None,
    *,
    root: Path | None = None,
    changes: Changes | None = None,
    out: TextIO = sys.stdout,
    clear: bool = True,
    on_graded: Callable[[Step, list[Record]], None] | None = None,
) -> int:
    """Grade `step_id` (or the first unfinished step), then again at each change.

    `changes` defaults to watchfiles watching `root` (the exercises folder); a test can
    pass its own iterable of changed paths. Returns 0 when the changes end (Ctrl-C).
    """
    catalog = load_catalog()
    root = root or catalog.steps[0].exercise_dir.parent
    step = catalog.step(step_id) if step_id else first_unfinished(catalog, root)

    def grade_and_show(step: Step) -> None:
        settings = Settings(source=lambda step: root / step.slug)
        records = grade([step], settings)
        remember(step, root / step.slug, records)
        if clear:
            _clear_screen(out)
        out.write(report(step, records, catalog) + "\n")
        out.flush()
        if on_graded:
            on_graded(step, records)

    try:
        if changes is None:
            changes = SavedFiles(root)
        grade_and_show(step)
        for paths in changes:
            for changed in steps_changed(catalog, root, paths):
                grade_and_show(changed)
    except KeyboardInterrupt:
        pass
    return 0


def _clear_screen(out: TextIO) -> None:
    """Clear a terminal; leave a file or a pipe alone, so a log keeps every report."""
    if not (hasattr(out, "isatty") and out.isatty()):
        return
    if os.name == "nt":  # the classic Windows console ignores ANSI codes unless enabled
        os.system("cls")  # a fixed command: nothing of the learner in it
    else:
        out.write(CLEAR)


class SavedFiles:
    """Batches of Python files saved under `root`, watched from the moment this is made.

    watchfiles starts watching only when its generator first runs; here a thread runs it
    at once and this waits until it is live, so a save made while a step is being graded
    is queued, not lost.
    """

    def __init__(self, root: Path, stop: threading.Event | None = None) -> None:
        self._batches: queue.Queue[list[str] | None] = queue.Queue()
        self._live = threading.Event()
        self.stop = stop or threading.Event()
        threading.Thread(target=self._watch, args=(root,), daemon=True).start()
        self._live.wait(timeout=30)

    def _watch(self, root: Path) -> None:
        from watchfiles import PythonFilter
        from watchfiles import watch as watch_files

        try:
            # A short timeout yields an empty batch now and then: the first says the
            # watcher is live, and each lets a stop request end the thread. Editors save in
            # bursts (a temporary file, a rename): watchfiles groups a burst into one batch.
            for batch in watch_files(
                root,
                watch_filter=PythonFilter(),
                stop_event=self.stop,
                rust_timeout=200,
                yield_on_timeout=True,
                raise_interrupt=False,
            ):
                self._live.set()
                if batch:
                    self._batches.put([path for _change, path in batch])
        finally:
            self._live.set()
            self._batches.put(None)

    def __iter__(self) -> Iterator[list[str]]:
        try:
            while True:
                try:
                    # A timeout keeps Ctrl-C working on Windows, where a plain wait on a
                    # lock cannot be interrupted.
                    batch = self._batches.get(timeout=0.5)
                except queue.Empty:
                    continue
                if batch is None:
                    return
                yield batch
        finally:
            self.stop.set()
