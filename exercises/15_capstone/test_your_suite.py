"""Graded tests for step 15's test suite. They grade your `test_service.py`, not your service.

As in step 12, each run is a whole pytest of its own, in a scratch folder that holds a
copy of your `test_service.py` and the given `suite_kit.py` beside one version of the
course's reference service (`solutions/15_capstone/`):
- the reference itself: every test of yours must pass, at least 8 of them;
- a rewrite of it that behaves the same with other source text: your suite must pass on
  it too, so a suite that reads the service's code scores zero;
- each mutant (`autograder/mutants/15_capstone/mutants.toml`): the reference with one
  bug. A mutant is caught when a test of yours that passed on the reference fails on it.
The runner and the verdicts are step 12's (`autograder.suites`, and the helpers of
`exercises/12_testing/test_your_suite.py`, imported, not copied).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import threading
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from autograder.catalog import ROOT
from autograder.expect import Mismatch

HERE = Path(__file__).resolve().parent  # the course's copy of the step: its suite_kit.py
REFERENCE = ROOT / "solutions" / "15_capstone"
MUTANTS = ROOT / "autograder" / "mutants" / "15_capstone"
REPORTER = ROOT / "autograder" / "mutants" / "12_testing"  # the suite_report plugin
CATALOG = tomllib.loads((MUTANTS / "mutants.toml").read_text(encoding="utf-8"))
BUGS = {mutant["name"]: mutant["bug"] for mutant in CATALOG["mutants"]}


def _step_12() -> ModuleType:
    """Step 12's grading helpers (SuiteRun, read_run and the verdicts)."""
    name = "coursekit_graded_12_test_your_suite"
    if name not in sys.modules:
        path = ROOT / "exercises" / "12_testing" / "test_your_suite.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


suites = _step_12()
SuiteRun = suites.SuiteRun
SUITE_TIMEOUT = suites.SUITE_TIMEOUT  # seconds one run may take (120: a hang stop)


def the_service(edits: list[dict[str, str]]) -> dict[str, str]:
    """The reference service's files (by name) with `edits` made, each to a unique text."""
    files = {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted(REFERENCE.glob("*.py"))
        if path.name not in {"test_service.py", "suite_kit.py"}
    }
    for edit in edits:
        text = files[edit["file"]]
        if text.count(edit["replace"]) != 1:
            raise RuntimeError(
                f"mutants.toml: {edit['replace']!r} must occur exactly once in {edit['file']}"
            )
        files[edit["file"]] = text.replace(edit["replace"], edit["with"])
    return files


SERVICES: dict[str, dict[str, str]] = {"correct": the_service([])}
SERVICES |= {rewrite["name"]: the_service(rewrite["edits"]) for rewrite in CATALOG["equivalents"]}
SERVICES |= {mutant["name"]: the_service([mutant]) for mutant in CATALOG["mutants"]}
EQUIVALENTS = [rewrite["name"] for rewrite in CATALOG["equivalents"]]


def prepare_run(scratch: Path, suite: Path, service: str) -> dict[str, str]:
    """A folder holding the suite and the suite kit beside one version of the service."""
    place = scratch / service
    folder = place / "suite"
    folder.mkdir(parents=True)
    shutil.copyfile(suite, folder / "test_service.py")
    shutil.copyfile(HERE / "suite_kit.py", folder / "suite_kit.py")
    for name, text in SERVICES[service].items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {
        "AUTOGRADER_SUITE_REPORT": str(place / "report.json"),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HYPOTHESIS_STORAGE_DIRECTORY": str(suites.hypothesis_folder(place)),
        "PYTHONPATH": os.pathsep.join(
            [str(REPORTER), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    return {
        "service": service,
        "folder": str(folder),
        "plugins": str(REPORTER),
        "log": str(place / "pytest.log"),
        "result": str(place / "result.json"),
        "report": str(place / "report.json"),
        "env": json.dumps(env),
    }


def run_suites(suite: Path, services: list[str]) -> dict[str, Any]:
    """Run the suite on each version (the reference first): step 12's runner, with this
    step's folders (its `prepare_run` is replaced in the private copy loaded above)."""
    suites.prepare_run = prepare_run
    return suites.run_suites(suite, services)


_started: dict[str, Future[dict[str, Any]]] = {}


def start_runs(names: set[str], folder: Path) -> Future[dict[str, Any]]:
    """Start, once, the runs that the graded tests `names` need, in a thread of their own,
    for the suite of the graded `folder`.

    conftest.py calls it as soon as the tests are collected, so the runs go on while the
    service's tests (test_app.py) wait on the network; the `runs` fixture waits for them.
    """
    if "runs" not in _started:
        future: Future[dict[str, Any]] = Future()
        _started["runs"] = future
        wanted = {name.removeprefix("test_catches_") for name in names}
        if "test_your_suite_passes_on_the_reference_service" in names:
            wanted |= set(BUGS)  # it needs to know that some mutant is caught
        services = ["correct", *EQUIVALENTS, *(name for name in BUGS if name in wanted)]
        suite = folder / "test_service.py"

        def work() -> None:
            try:
                if not suite.is_file():
                    raise AssertionError(
                        "There is no test_service.py to grade: it holds your suite."
                    )
                future.set_result(run_suites(suite, services))
            except BaseException as error:  # the fixture re-raises it in the test
                future.set_exception(error)

        threading.Thread(target=work, name="suite-runs", daemon=True).start()
    return _started["runs"]


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, graded_folder: Path) -> Iterator[dict[str, Any]]:
    """The runs the selected graded tests need, made once for the whole step."""
    seen = start_runs({item.name for item in request.session.items}, graded_folder).result()
    problem = suites.baseline_problem(seen["correct"] or SuiteRun("correct"))
    yield {
        service: run
        if service == "correct" or (run is not None and not problem)
        else SuiteRun(service, skipped_because=problem or "not run")
        for service, run in seen.items()
    }


def expect_a_sound_suite(runs: dict[str, Any]) -> Any:
    correct = runs["correct"] or SuiteRun("correct")
    problem = suites.baseline_problem(correct)
    if problem:
        raise Mismatch(
            problem.replace("correct, given service", "course's reference service"),
            symptom="the suite fails on the reference service",
        )
    problem = suites.rewrite_problem(correct, [runs[name] for name in EQUIVALENTS])
    if problem:
        raise Mismatch(problem, symptom="the suite fails on a rewrite of the reference")
    return correct


def expect_caught(runs: dict[str, Any], mutant: str) -> None:
    correct = expect_a_sound_suite(runs)
    run = runs[mutant]
    if run.timed_out or not suites.caught(correct, run):
        raise Mismatch(
            f"A bug survived your suite: {BUGS[mutant]} Every test of yours that passes on "
            "the reference service passes on the service with this bug too"
            + (f" (or it did not finish within {SUITE_TIMEOUT:g} s)" if run.timed_out else "")
            + ". Add a test that would fail on it."
        )


def test_your_suite_passes_on_the_reference_service(runs: dict[str, Any]) -> None:
    correct = expect_a_sound_suite(runs)
    # A suite that passes on every version tests nothing: an assert-free one does.
    if not any(suites.caught(correct, runs[name]) for name in BUGS if name in runs):
        raise Mismatch(
            "Your suite passes on the reference service and on every mutant too: it "
            "catches no bug. Assert what each answer must be (its status, its fields, its "
            "values), not only that a request was made.",
            symptom="the suite catches no mutant",
        )


def test_catches_models_without_key(runs: dict[str, Any]) -> None:
    expect_caught(runs, "models_without_key")


def test_catches_other_users_session(runs: dict[str, Any]) -> None:
    expect_caught(runs, "other_users_session")


def test_catches_session_forgets_reply(runs: dict[str, Any]) -> None:
    expect_caught(runs, "session_forgets_reply")


def test_catches_stream_without_done(runs: dict[str, Any]) -> None:
    expect_caught(runs, "stream_without_done")


def test_catches_no_retry_after(runs: dict[str, Any]) -> None:
    expect_caught(runs, "no_retry_after")


def test_catches_request_id_ignored(runs: dict[str, Any]) -> None:
    expect_caught(runs, "request_id_ignored")


def test_catches_other_users_job(runs: dict[str, Any]) -> None:
    expect_caught(runs, "other_users_job")


# An author's check: each mutant of mutants.toml has its graded test above, and no more.
_graded = {name.removeprefix("test_catches_") for name in dir() if name.startswith("test_catches_")}
if _graded != set(BUGS):
    raise RuntimeError(f"mutants.toml and test_catches_* differ: {sorted(_graded ^ set(BUGS))}")
