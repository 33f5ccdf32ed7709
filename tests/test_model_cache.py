"""A missing model is built by exactly one process, however many need it at once.

Every fresh clone, CI run and Gradescope container starts with an empty model cache.
If two grading processes both built a model, a test could load one copy as its
reference and the app the other (a different `trained_at`): a false failure.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from coursekit.models import CACHE_ENV_VAR
from tests.helpers import STEPS, run_pytest_exercises

PROCESSES = 4


def _load_when_all_are_ready(cache: str, barrier: Any) -> tuple[int, str]:
    os.environ[CACHE_ENV_VAR] = cache
    from coursekit.models import load_model

    barrier.wait()  # all processes find the cache empty at the same moment
    model = load_model("tickets")
    return os.stat(model.path).st_ino, model.metadata["trained_at"]


def test_processes_that_find_the_cache_empty_share_one_build(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as on Windows
    with context.Manager() as manager:
        barrier = manager.Barrier(PROCESSES)
        with context.Pool(PROCESSES) as pool:
            loaded = pool.starmap(
                _load_when_all_are_ready, [(str(tmp_path), barrier)] * PROCESSES, chunksize=1
            )
    # A second build would have replaced the file (a new inode) and its metadata.
    assert len(set(loaded)) == 1, f"the model was built more than once: {loaded}"
    assert len(list(tmp_path.rglob("tickets.skops"))) == 1


@pytest.mark.parametrize("start", ["forked", "spawned", "forked again", "spawned again"])
def test_model_steps_graded_together_from_an_empty_cache_score_full_points(
    tmp_path: Path, start: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "empty-cache"))
    if start.startswith("spawned"):
        monkeypatch.setenv("AUTOGRADER_SPAWN", "1")  # every child builds or waits itself
    model_steps = [step for step in STEPS if step.id in {"03", "04", "05"}]
    folders = [f"exercises/{step.slug}" for step in model_steps]
    run = run_pytest_exercises(tmp_path, "--solutions", targets=folders)
    total = sum(step.max_points for step in model_steps)
    assert run.results.get("score") == total, run.stdout
