"""Helpers shared by the course's own checks."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autograder.catalog import ROOT, Step, load_catalog

STEPS = load_catalog().steps


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
