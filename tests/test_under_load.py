"""A correct solution scores full points on a busy machine: no false zero for time.

A learner's machine is often busy (a notebook kernel, a browser, an IDE indexing).
Here every core runs four busy processes while the whole course is graded; every
solution must still score full points, with its slowest test well inside its limit.
The limits stop hangs; this proves they never judge speed.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from autograder.engine import Settings, grade
from autograder.records import Record
from autograder.remote import http_only_tests
from tests.helpers import ROOT, STEPS

BUSY_PER_CORE = 4  # about a load of 10 on a 2-core machine, with the grading itself
BUSY_FOR = 600.0  # seconds at most: the busy processes stop by themselves
LARGEST_SHARE_OF_A_LIMIT = 0.5


def _busy(seconds: float) -> None:
    # A session of its own, as the grading children have: where the kernel shares the
    # CPU between sessions (Linux's autogroup), this process then competes with them
    # one to one, as another program would, instead of sharing one session's slice.
    if hasattr(os, "setsid"):
        os.setsid()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(10_000))


@contextlib.contextmanager
def every_core_busy() -> Iterator[None]:
    context = multiprocessing.get_context("spawn")
    busy = [
        context.Process(target=_busy, args=(BUSY_FOR,), daemon=True)
        for _ in range(BUSY_PER_CORE * (os.cpu_count() or 1))
    ]
    for process in busy:
        process.start()
    try:
        yield
    finally:
        for process in busy:
            process.terminate()
            process.join()


def test_every_solution_scores_full_points_with_every_core_busy() -> None:
    with every_core_busy():
        records = grade(STEPS, Settings(source=lambda step: step.solution_dir))
    failing = {f"{r.step} {r.test}": r.message for r in records if not r.passed}
    assert not failing, failing
    steps = {step.id: step for step in STEPS}

    def limit(record: Record) -> float:
        return steps[record.step].limit(record.test)

    slowest = max(records, key=lambda r: r.duration / limit(r))
    share = slowest.duration / limit(slowest)
    assert share < LARGEST_SHARE_OF_A_LIMIT, (
        f"{slowest.step} {slowest.test} took {slowest.duration:.1f} s of its "
        f"{limit(slowest):g} s limit under load"
    )


def test_an_instructors_class_over_http_scores_full_points_with_every_core_busy(
    tmp_path: Path,
) -> None:
    # The steps whose tests run over HTTP (autograder/remote.py), graded as an instructor
    # grades a class: three students at once, each with a warm process of its own that
    # starts and ends a process per test. Under such load, grade-class once lost a test or
    # two of a correct submission in most runs: a client of the warm process ended with
    # its answers unread ended the warm process too (tests/test_warm_process.py has the
    # check that fails without that fix; this one proves the whole path).
    steps = [step for step in STEPS if http_only_tests(step)]
    for student in ("ann", "ben", "cat"):
        for step in steps:
            shutil.copytree(step.solution_dir, tmp_path / "class" / student / step.slug)
    command = [sys.executable, "-m", "autograder", "grade-class", str(tmp_path / "class")]
    command += ["--out", str(tmp_path / "grades"), "--steps", *(step.id for step in steps)]
    with every_core_busy():
        completed = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
        )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    full = sum(step.max_points for step in steps)
    lost = {}
    for graded in sorted((tmp_path / "grades").glob("*.json")):
        results = json.loads(graded.read_text(encoding="utf-8"))
        if results["score"] != full:
            lost[graded.stem] = {
                t["name"]: t["output"][:300]
                for t in results["tests"]
                if t["score"] < t["max_score"]
            }
    assert len(list((tmp_path / "grades").glob("*.json"))) == 3, completed.stdout
    assert not lost, lost
