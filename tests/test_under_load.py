"""A correct solution scores full points on a busy machine: no false zero for time.

A learner's machine is often busy (a notebook kernel, a browser, an IDE indexing).
Here every core runs four busy processes while the whole course is graded; every
solution must still score full points, with its slowest test well inside its limit.
The limits stop hangs; this proves they never judge speed.
"""

from __future__ import annotations

import multiprocessing
import os
import time

from autograder.engine import Settings, grade
from tests.helpers import STEPS

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


def test_every_solution_scores_full_points_with_every_core_busy() -> None:
    context = multiprocessing.get_context("spawn")
    busy = [
        context.Process(target=_busy, args=(BUSY_FOR,), daemon=True)
        for _ in range(BUSY_PER_CORE * (os.cpu_count() or 1))
    ]
    for process in busy:
        process.start()
    try:
        records = grade(STEPS, Settings(source=lambda step: step.solution_dir))
    finally:
        for process in busy:
            process.terminate()
            process.join()
    failing = {f"{r.step} {r.test}": r.message for r in records if not r.passed}
    assert not failing, failing
    limits = {step.id: step.timeout for step in STEPS}
    slowest = max(records, key=lambda r: r.duration / limits[r.step])
    share = slowest.duration / limits[slowest.step]
    assert share < LARGEST_SHARE_OF_A_LIMIT, (
        f"{slowest.step} {slowest.test} took {slowest.duration:.1f} s of its "
        f"{limits[slowest.step]:g} s limit under load"
    )
