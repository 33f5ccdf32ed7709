"""Graded tests for step 12. They grade your suite, `test_service.py`, not the service.

Run them with `pytest exercises/12_testing`. Points and hints live in course.toml.

Each graded test runs your suite with pytest in a process of its own, in a scratch
folder holding a copy of `test_service.py` beside one version of the given service:
- the correct `service.py`: every test of yours must pass, at least `MIN_TESTS` of them
  (a skipped or xfailed test does not count);
- two rewrites of it that behave the same with other source text: your suite must pass
  on them too, so a suite that reads the service's code or hashes its file scores zero;
- each mutant (`autograder/mutants/12_testing/mutants.toml`): the service with one bug.
  A mutant is caught when a test of yours that passed on the correct service fails on
  it. Nothing else counts: not what your suite prints, writes or returns.
One runner (`autograder.suites`) makes the runs, two at a time, each a process of its
own, forked from it where the OS allows: it imports pytest and the rest once (and is
itself forked from the grader's warm process, which imported them already). Your suite
is found in the grader's `graded_folder` and never imported by the tests here, so an
instructor's run grades this step in a process your code does not enter.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from autograder.catalog import ROOT
from autograder.expect import Mismatch
from autograder.processes import WARM_SOCKET_ENV, run_module
from autograder.suites import WARM

HERE = Path(__file__).resolve().parent  # the course's copy of the step and its service
MUTANTS = ROOT / "autograder" / "mutants" / "12_testing"
CATALOG = tomllib.loads((MUTANTS / "mutants.toml").read_text(encoding="utf-8"))
BUGS = {mutant["name"]: mutant["bug"] for mutant in CATALOG["mutants"]}
MIN_TESTS = 8  # tests of the suite that must pass on the correct service
SUITE_TIMEOUT = 120.0  # seconds one run may take: a correct one takes 2 s of CPU, and a
# loaded machine can stretch that tenfold; the limit stops hangs, it never judges speed
WORKERS = 2  # runs at once: each is a whole Python process, busy on one core
SHOWN = 5  # failing tests named in a message, at most


@dataclass
class SuiteRun:
    """What the grader saw of one run of the learner's suite on one service."""

    service: str  # "correct", an equivalent rewrite's name or a mutant's
    finished: bool = False  # pytest ran to its end and its report was written
    timed_out: bool = False
    exit_code: int | None = None
    tests: dict[str, str] = field(default_factory=dict)  # test id -> its outcome
    collect_errors: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # pytest's FAILED/ERROR lines
    skipped_because: str = ""  # not run, because the suite fails on the correct service

    def passed(self) -> set[str]:
        return {test for test, outcome in self.tests.items() if outcome == "passed"}

    def shown_failures(self, tests: set[str] | None = None) -> str:
        """The failing tests, with pytest's one-line reason when it gave one."""
        failing = sorted(tests if tests is not None else set(self.tests) - self.passed())
        lines = []
        for test in failing[:SHOWN]:
            reason = next((line for line in self.summary if test in line), test)
            lines.append(f'"{reason}"')
        more = f" and {len(failing) - SHOWN} more" if len(failing) > SHOWN else ""
        return "; ".join(lines) + more


def the_service(edits: list[tuple[str, str]]) -> str:
    """The given service's text with `edits` made, each to a text that occurs once."""
    text = (HERE / "service.py").read_text(encoding="utf-8")
    for old, new in edits:
        if text.count(old) != 1:
            raise RuntimeError(f"mutants.toml: {old!r} must occur exactly once in service.py")
        text = text.replace(old, new)
    return text


SERVICES: dict[str, str] = {"correct": the_service([])}
SERVICES |= {
    rewrite["name"]: the_service([(edit["replace"], edit["with"]) for edit in rewrite["edits"]])
    for rewrite in CATALOG["equivalents"]
}
SERVICES |= {m["name"]: the_service([(m["replace"], m["with"])]) for m in CATALOG["mutants"]}
EQUIVALENTS = [rewrite["name"] for rewrite in CATALOG["equivalents"]]


def hypothesis_folder(scratch: Path) -> Path:
    """A fresh hypothesis folder for one run, holding only its table of Unicode characters.

    Building that table costs a fresh folder about 3 s of CPU, so it is kept between
    runs (in .autograder/); the examples hypothesis saves are not, so no run's outcome
    depends on what an earlier run (another mutant, another submission) found.
    """
    kept = ROOT / ".autograder" / "hypothesis" / "unicode_data"
    folder = scratch / "hypothesis"
    if kept.is_dir():
        shutil.copytree(kept, folder / "unicode_data")
    return folder


def keep_unicode_table(scratch: Path) -> None:
    """Keep the table a run built, for the runs to come (the first one to finish wins)."""
    built = scratch / "hypothesis" / "unicode_data"
    kept = ROOT / ".autograder" / "hypothesis" / "unicode_data"
    if built.is_dir() and not kept.is_dir():
        kept.parent.mkdir(parents=True, exist_ok=True)
        # Copied beside, then renamed: a run starting meanwhile never copies half a table.
        partial = Path(tempfile.mkdtemp(dir=kept.parent)) / "unicode_data"
        shutil.copytree(built, partial)
        with contextlib.suppress(OSError):  # another run kept its table first
            partial.rename(kept)
        shutil.rmtree(partial.parent, ignore_errors=True)


def prepare_run(scratch: Path, suite: Path, service: str) -> dict[str, str]:
    """A folder holding a copy of the suite beside one version of the service."""
    place = scratch / service
    folder = place / "suite"
    folder.mkdir(parents=True)
    shutil.copyfile(suite, folder / "test_service.py")
    (folder / "service.py").write_text(SERVICES[service], encoding="utf-8")
    # Its own config file, so pytest stops looking upwards for the course's.
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {
        "AUTOGRADER_SUITE_REPORT": str(place / "report.json"),
        # As in every graded run: the suite enables the plugins it uses itself.
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HYPOTHESIS_STORAGE_DIRECTORY": str(hypothesis_folder(place)),
        "PYTHONPATH": os.pathsep.join(
            [str(MUTANTS), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    return {
        "service": service,
        "folder": str(folder),
        "plugins": str(MUTANTS),
        "log": str(place / "pytest.log"),
        "result": str(place / "result.json"),
        "report": str(place / "report.json"),
        "env": json.dumps(env),
    }


def read_run(run: dict[str, str]) -> SuiteRun | None:
    """What the grader saw of one run; None if it was not run."""
    result_path = Path(run["result"])
    if not result_path.is_file():
        return None
    result = json.loads(result_path.read_text(encoding="utf-8"))
    seen = SuiteRun(run["service"], timed_out=result["timed_out"], exit_code=result["exit_code"])
    if seen.timed_out:
        return seen
    log = Path(run["log"])
    output = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    seen.summary = [
        line.strip() for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))
    ]
    report = Path(run["report"])
    if report.is_file():
        record = json.loads(report.read_text(encoding="utf-8"))
        seen.finished = record["exitstatus"] == seen.exit_code
        seen.tests = {test.split("::", 1)[-1]: outcome for test, outcome in record["tests"].items()}
        seen.collect_errors = record["collect_errors"]
    return seen


def run_suites(suite: Path, services: list[str]) -> dict[str, SuiteRun | None]:
    """Run the suite on each version of the service (the correct one first) in one runner.

    `autograder.suites` runs them, each in a process of its own, `WORKERS` at a time; the
    others only if the suite passes on the correct service.
    """
    with tempfile.TemporaryDirectory(prefix="suites-") as scratch:
        runs = [prepare_run(Path(scratch), suite, service) for service in services]
        job = Path(scratch) / "job.json"
        job.write_text(
            json.dumps({"runs": runs, "timeout": SUITE_TIMEOUT, "workers": WORKERS}),
            encoding="utf-8",
        )
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"AUTOGRADER_CHILD", "PYTEST_ADDOPTS", WARM_SOCKET_ENV}
        }
        run_module("autograder.suites", [str(job)], env, Path(scratch) / "runner.log", WARM)
        keep_unicode_table(Path(scratch) / services[0])
        return {run["service"]: read_run(run) for run in runs}


def baseline_problem(run: SuiteRun) -> str:
    """Why the suite's run on the correct service does not count, or "" if it does."""
    if run.timed_out:
        return (
            f"On the correct, given service your suite did not finish within "
            f"{SUITE_TIMEOUT:g} s. Look for a test that waits forever (a stream read "
            "without an end, a sleep, a server never stopped)."
        )
    if run.exit_code == 5:
        return f"pytest found no test in test_service.py: write at least {MIN_TESTS}."
    if not run.finished:
        return (
            f"On the correct, given service your suite's pytest stopped before its end "
            f'(exit code {run.exit_code}). Its last words: "{" ".join(run.summary[-2:])}".'
        )
    if run.collect_errors:
        return (
            "pytest could not collect test_service.py next to the correct service "
            f"(an import or a syntax error?): {run.shown_failures(set(run.collect_errors))}."
        )
    failing = (
        set(run.tests)
        - run.passed()
        - {test for test, outcome in run.tests.items() if outcome in {"skipped", "xfailed"}}
    )
    if failing:
        return (
            "On the correct, given service these tests of yours fail: "
            f"{run.shown_failures(failing)}. A test that fails on the correct service "
            "catches nothing: fix it (or what it expects) first."
        )
    if len(run.passed()) < MIN_TESTS:
        return (
            f"Your suite has {len(run.passed())} passing tests on the correct service; it "
            f"needs at least {MIN_TESTS} (a skipped or xfailed test does not count)."
        )
    return ""


def rewrite_problem(correct: SuiteRun, rewrites: list[SuiteRun]) -> str:
    """Why the suite fails a rewrite with the same behaviour, or "" if it passes them."""
    for run in rewrites:
        if run.timed_out:
            return (
                "On a rewrite of the correct service (the same behaviour, other source "
                f"text) your suite did not finish within {SUITE_TIMEOUT:g} s."
            )
        lost = correct.passed() - run.passed()
        if lost or not run.finished or run.collect_errors:
            failures = run.shown_failures(lost) or "it did not run to its end"
            return (
                "Your suite fails on a rewrite of the correct service that behaves exactly "
                f"the same, with other source text: {failures}. "
                "A test judges what the service answers, never its source code or its file: "
                "a suite that does scores zero."
            )
    return ""


@pytest.fixture(scope="module")
def runs(
    request: pytest.FixtureRequest, graded_folder: Path
) -> Iterator[dict[str, Future[SuiteRun]]]:
    """The runs the selected graded tests need, made once for the whole step."""
    suite = graded_folder / "test_service.py"
    if not suite.is_file():
        raise AssertionError("There is no test_service.py to grade: it holds your suite.")
    names = {item.name for item in request.session.items}
    wanted = {name.removeprefix("test_catches_") for name in names}
    if names & {
        "test_your_suite_passes_on_the_correct_service",
        "test_your_suite_judges_behaviour_not_source",
    }:
        wanted |= set(BUGS)  # these two need to know that some mutant is caught
    mutants = [name for name in BUGS if name in wanted]
    seen = run_suites(suite, ["correct", *EQUIVALENTS, *mutants])
    correct = seen["correct"] or SuiteRun("correct")
    # A suite that fails on the correct service can catch nothing: its other runs do not
    # count (the runner does not even start them when pytest itself failed there).
    problem = baseline_problem(correct)
    futures: dict[str, Future[SuiteRun]] = {}
    for service, run in seen.items():
        future: Future[SuiteRun] = Future()
        if service != "correct" and (problem or run is None):
            run = SuiteRun(service, skipped_because=problem or "not run")
        future.set_result(run or SuiteRun(service))
        futures[service] = future
    yield futures


def expect_a_sound_suite(runs: dict[str, Future[SuiteRun]]) -> SuiteRun:
    """The run on the correct service, once the suite passes there and on the rewrites."""
    correct = runs["correct"].result()
    problem = baseline_problem(correct)
    if problem:
        raise Mismatch(problem, symptom="the suite fails on the correct service")
    problem = rewrite_problem(correct, [runs[name].result() for name in EQUIVALENTS])
    if problem:
        raise Mismatch(problem, symptom="the suite fails on a rewrite of the correct service")
    return correct


def expect_caught(runs: dict[str, Future[SuiteRun]], mutant: str) -> None:
    correct = expect_a_sound_suite(runs)
    run = runs[mutant].result()
    if run.timed_out:
        raise Mismatch(
            f"A bug survived your suite: {BUGS[mutant]} On the service with this bug your "
            f"suite did not finish within {SUITE_TIMEOUT:g} s, so no test of yours failed."
        )
    if not caught(correct, run):
        raise Mismatch(
            f"A bug survived your suite: {BUGS[mutant]} Every test of yours that passes on "
            "the correct service passes on the service with this bug too. Add a test that "
            "would fail on it."
        )


def caught(correct: SuiteRun, run: SuiteRun) -> bool:
    """Whether a test that passed on the correct service failed on this mutant."""
    failed = {test for test, outcome in run.tests.items() if outcome == "failed"}
    return run.finished and bool(failed & correct.passed())


def expect_some_mutant_caught(runs: dict[str, Future[SuiteRun]], correct: SuiteRun) -> None:
    # A suite that passes on every version of the service tests nothing: an assert-free
    # one does. So the points for passing need one failure where a bug is.
    if not any(caught(correct, runs[name].result()) for name in BUGS if name in runs):
        raise Mismatch(
            "Your suite passes on the correct service, and on every mutant too: it catches "
            "no bug, so it proves nothing yet. Assert what each answer must be (its "
            "status, its fields, its values), not only that a request was made.",
            symptom="the suite catches no mutant",
        )


def test_your_suite_passes_on_the_correct_service(runs: dict[str, Future[SuiteRun]]) -> None:
    correct = runs["correct"].result()
    problem = baseline_problem(correct)
    if problem:
        raise Mismatch(problem, symptom="the suite fails on the correct service")
    expect_some_mutant_caught(runs, correct)


def test_your_suite_judges_behaviour_not_source(runs: dict[str, Future[SuiteRun]]) -> None:
    correct = expect_a_sound_suite(runs)
    expect_some_mutant_caught(runs, correct)


def test_catches_predict_without_key(runs: dict[str, Future[SuiteRun]]) -> None:
    expect_caught(runs, "predict_without_key")


def test_catches_other_users_note(runs: dict[str, Future[SuiteRun]]) -> None:
    expect_caught(runs, "other_users_note")


def test_catches_created_is_200(runs: dict[str, Future[SuiteRun]]) -> None:
    expect_caught(runs, "created_is_200")


def test_catches_one_note_too_many(runs: dict[str, Future[SuiteRun]]) -> None:
    expect_caught(runs, "one_note_too_many")


def test_catches_empty_text_accepted(runs: dict[str, Future[SuiteRun]]) -> None:
    expect_caught(runs, "empty_text_accepted")


def test_catches_note_bound_off_by_one(runs: dict[str, Future[SuiteRun]]) -> None:
    expect_caught(runs, "note_bound_off_by_one")


def test_catches_stream_without_done(runs: dict[str, Future[SuiteRun]]) -> None:
    expect_caught(runs, "stream_without_done")


def test_catches_clock_ignored(runs: dict[str, Future[SuiteRun]]) -> None:
    expect_caught(runs, "clock_ignored")


def test_catches_expiry_boundary(runs: dict[str, Future[SuiteRun]]) -> None:
    expect_caught(runs, "expiry_boundary")


def test_catches_model_override_ignored(runs: dict[str, Future[SuiteRun]]) -> None:
    expect_caught(runs, "model_override_ignored")


def test_catches_confidence_renamed(runs: dict[str, Future[SuiteRun]]) -> None:
    expect_caught(runs, "confidence_renamed")


# An author's check: each mutant of mutants.toml has its graded test above, and no more.
_graded = {name.removeprefix("test_catches_") for name in dir() if name.startswith("test_catches_")}
if _graded != set(BUGS):
    raise RuntimeError(f"mutants.toml and test_catches_* differ: {sorted(_graded ^ set(BUGS))}")
