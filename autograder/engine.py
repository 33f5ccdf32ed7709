"""The grader's parent side: grade each step in child processes, under time limits.

A learner's step can do anything to the process that imports it: fail to parse, call
`sys.exit()`, loop forever at import or inside a request handler, crash. So no learner
code ever runs here. Each step is graded by a child `pytest` (see `autograder.child`)
that reports events to a file; this side watches those events with a deadline for the
import and for each test. A child that hangs is killed, its running test scored zero,
and a fresh child grades the tests that remain. No signal alarms: this works the same
on Linux, macOS and Windows.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TextIO

from autograder import sandbox, services
from autograder.catalog import Step, load_catalog
from autograder.child import ENV_VAR, Job
from autograder.messages import crashed_message, show_path
from autograder.pristine import is_untouched
from autograder.processes import Child, imports_of, start_child
from autograder.records import Outcome, Record
from autograder.remote import http_only_tests

STARTUP_LIMIT = 90.0  # seconds for Python and pytest to start and collect: generous, a loaded
# machine is slow, and a learner's code does not run during this phase
POLL_INTERVAL = 0.02
MAX_TIMEOUTS_PER_STEP = 2  # after this many hanging tests, the rest of the step is not run


@dataclass
class Settings:
    """How to grade: where the code comes from, which tests, what limits."""

    source: Callable[[Step], Path] = lambda step: step.exercise_dir
    select: Callable[[Step, str], bool] = lambda step, test: True
    import_timeout: float | None = None  # None: the catalog's
    test_timeout: float | None = None  # None: the step's
    # Steps spend much of their time waiting on servers they started, so grading twice
    # as many steps as there are cores at once keeps the cores busy, not crowded.
    workers: int = field(default_factory=lambda: max(2, min(8, 2 * (os.cpu_count() or 1))))
    # Seconds each step took last time, if known: the longest start first.
    expected: Callable[[Step], float] = lambda step: 0.0
    # An instructor grading others' code: the child sees only what it needs (sandbox.py).
    sandboxed: bool = False


def grade(
    steps: Iterable[Step],
    settings: Settings | None = None,
    on_step_done: Callable[[Step, list[Record]], None] | None = None,
) -> list[Record]:
    """Grade `steps` (in parallel, one child process each); records in course order."""
    settings = settings or Settings()
    steps = list(steps)
    results: dict[str, list[Record]] = {}
    # Longest first, so a slow step does not start last and keep the rest waiting.
    by_length = sorted(steps, key=settings.expected, reverse=True)
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        futures = {step.id: pool.submit(grade_step, step, settings) for step in by_length}
        # Report in course order as soon as each step (and those before it) is done.
        for step in steps:
            results[step.id] = futures[step.id].result()
            if on_step_done:
                on_step_done(step, results[step.id])
    return [record for step in steps for record in results[step.id]]


@cache
def _needs(step: Step) -> tuple[str, ...]:
    """What a child of `step` imports: its tests', its solution's and the grader's modules."""
    files = [Path(__file__).with_name("child.py")]
    files += [*step.exercise_dir.glob("test_*.py"), *step.solution_dir.glob("*.py")]
    found = imports_of(files, local=step.modules) | {"fastapi.testclient", "autograder.child"}
    return tuple(sorted(found))


def grade_step(step: Step, settings: Settings) -> list[Record]:
    """Grade one step; always returns one record per selected graded test."""
    selected = [test.name for test in step.tests if settings.select(step, test.name)]
    source = settings.source(step).resolve()
    done: dict[str, Record] = {}
    remaining = list(selected)
    timeouts = 0
    retried = False
    waited: list[str] = []  # tests that failed on a wait of their own (see rerun_waits)

    def finish(name: str, outcome: Outcome, message: str, **extra: object) -> None:
        if name in done and not done[name].passed:
            return  # a parametrised test keeps its first failure
        test = step.test(name)
        done[name] = Record(
            step=step.id,
            step_title=step.title,
            test=name,
            points=test.points,
            score=test.points if outcome == "passed" else 0,
            outcome=outcome,
            message=message,
            hint=test.hint,
            section=test.section,
            **extra,  # type: ignore[arg-type]
        )

    if not source.is_dir():
        for name in remaining:
            finish(name, "not_run", f"There is no folder {show_path(source)} to grade.")
        remaining = []
    elif remaining and (absent := services.missing(step)):
        for name in remaining:
            finish(name, "not_run", absent)
        remaining = []

    while remaining:
        run = _run_child(step, source, remaining, settings)
        if run.forged:
            # An instructor's run whose report the submission changed: nothing in it
            # counts, and the step scores zero (a correct submission never does this).
            for name in selected:
                done.pop(name, None)
                finish(name, "failed", _forged_message(run.forged))
            remaining = []
            waited.clear()  # nothing of this run counts, not even its slow failures
            break
        for result in run.results:
            if result["test"] not in remaining:
                continue  # not a test this run was asked for: not the child's report
            finish(
                result["test"],
                result["outcome"],
                result["message"],
                duration=result["duration"],
                output=result["output"],
                symptom=result.get("symptom", ""),
            )
            if result.get("waited") and result["outcome"] != "passed":
                waited.append(result["test"])
        finished = {result["test"] for result in run.results}
        if run.import_problem:
            outcome, message = run.import_problem
            for name in remaining:
                if name not in finished:
                    finish(name, outcome, message)
            break
        if run.stopped_in:
            name, outcome, message = run.stopped_in
            if outcome == "timeout" and not retried:
                # A busy machine can slow a test past any limit: before scoring it zero,
                # run it once more, alone, in a fresh child. Only the step's first
                # timeout gets this second chance, so a real hang costs a limit twice.
                retried = True
                outcome, message, extra = _run_alone(step, source, name, settings)
                if outcome == "timeout":
                    message += (
                        " It ran out of time a second time too, run on its own: a busy "
                        "machine is not the cause."
                    )
            else:
                extra = {}
            finish(name, outcome, message, **extra)
            finished.add(name)
            timeouts += outcome == "timeout"
        progress = [name for name in remaining if name not in finished]
        if not run.stopped_in:
            # The child ended normally: whatever it did not run cannot be run.
            for name in progress:
                finish(name, "not_run", run.not_run_reason())
            break
        remaining = progress
        if timeouts >= MAX_TIMEOUTS_PER_STEP:
            for name in remaining:
                finish(
                    name,
                    "not_run",
                    f"Not run: {timeouts} tests of this step ran out of time, so grading "
                    "of the step stopped there. Fix the hanging code and grade again.",
                )
            break
    untouched = is_untouched(step, source)
    if waited and not untouched:  # a stub's failures have one cause: not worth a rerun
        _rerun_waits(step, source, list(dict.fromkeys(waited)), settings, done, finish)
    records = [done[name] for name in selected]
    if untouched:
        # Still graded for real above (a stub that passed a test would show it); a
        # failure of an untouched step has one cause, which the report says once.
        for record in records:
            if not record.passed:
                record.outcome = "not_started"
    return records


def _rerun_waits(
    step: Step,
    source: Path,
    names: list[str],
    settings: Settings,
    done: dict[str, Record],
    finish: Callable[..., None],
) -> None:
    """Run once more the tests that failed on a wait of their own, before they count.

    A wait that ran out (a job polled for, a server started, a client's timeout) is a
    time limit like the grader's own: on a busy machine a correct solution can meet it.
    The first such test runs again on its own; if it passes there, the machine was the
    cause, and the others run again too (together, in one child). If it fails again, the
    code is: the others keep their failure, and a real hang costs its limits only twice.
    """
    first, *rest = names
    again = _run_again(step, source, [first], settings)
    if again.get(first, ("failed",))[0] == "passed" and rest:
        again |= _run_again(step, source, rest, settings)
    for name in names:
        if name not in again:
            continue
        outcome, message, extra = again[name]
        if outcome != "passed":
            message += (
                " It failed so again when run once more on its own: a busy machine is not "
                "the cause."
            )
        done.pop(name, None)
        finish(name, outcome, message, **extra)


def _run_again(
    step: Step, source: Path, names: list[str], settings: Settings
) -> dict[str, tuple[Outcome, str, dict[str, object]]]:
    """Run `names` in a fresh child: each test's outcome, message and details (for a
    parametrised test, its first failure if any); a test it could not run is absent."""
    run = _run_child(step, source, names, settings)
    if run.forged:
        return {name: ("failed", _forged_message(run.forged), {}) for name in names}
    found: dict[str, tuple[Outcome, str, dict[str, object]]] = {}
    for result in run.results:
        name = result["test"]
        if name not in names or (name in found and found[name][0] != "passed"):
            continue
        extra = {
            "duration": result["duration"],
            "output": result["output"],
            "symptom": result.get("symptom", ""),
        }
        found[name] = (result["outcome"], result["message"], extra)  # type: ignore[assignment]
    if run.stopped_in and run.stopped_in[0] in names and run.stopped_in[0] not in found:
        found[run.stopped_in[0]] = (run.stopped_in[1], run.stopped_in[2], {})
    return found


def _forged_message(why: str) -> str:
    return (
        f"This step's run cannot be trusted: {why}. That happens when the submission's "
        "code changes how the grader runs or reports tests (or writes results itself), "
        "so the step scores zero. Code written to pass never does this."
    )


def _run_alone(
    step: Step, source: Path, name: str, settings: Settings
) -> tuple[Outcome, str, dict[str, object]]:
    """Run one test on its own in a fresh child: its outcome, message and details."""
    run = _run_child(step, source, [name], settings)
    if run.forged:
        return "failed", _forged_message(run.forged), {}
    for result in run.results:
        if result["test"] == name:
            extra = {
                "duration": result["duration"],
                "output": result["output"],
                "symptom": result.get("symptom", ""),
            }
            return result["outcome"], result["message"], extra  # type: ignore[return-value]
    if run.stopped_in:
        return run.stopped_in[1], run.stopped_in[2], {}
    if run.import_problem:
        return run.import_problem[0], run.import_problem[1], {}
    return "not_run", run.not_run_reason(), {}


@dataclass
class ChildRun:
    """What one child process reported before it ended (or was ended)."""

    results: list[dict[str, object]] = field(default_factory=list)
    import_problem: tuple[Outcome, str] | None = None
    stopped_in: tuple[str, Outcome, str] | None = None  # the test running when it stopped
    log_tail: str = ""
    # An instructor's run: why the child's report cannot be trusted, if it cannot.
    forged: str = ""

    def not_run_reason(self) -> str:
        detail = self.log_tail or "no detail was printed"
        return (
            "This test did not run: the step's test file could not be collected. "
            f"pytest said: {detail}"
        )


def _run_child(step: Step, source: Path, tests: list[str], settings: Settings) -> ChildRun:
    """Run `tests` in a child; in an instructor's run, those over HTTP in one of their own.

    See autograder.remote: the tests of an `over_http` step that use only `client` run
    in a child that never imports the submission, beside the child for the others.
    """
    over_http = http_only_tests(step) if settings.sandboxed else frozenset()
    remote = [name for name in tests if name in over_http]
    local = [name for name in tests if name not in over_http]
    if not remote:
        return _run_one_child(step, source, local, settings)
    if not local:
        return _run_one_child(step, source, remote, settings, remote=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [
            pool.submit(_run_one_child, step, source, remote, settings, remote=True),
            pool.submit(_run_one_child, step, source, local, settings),
        ]
        over, here = (future.result() for future in runs)
    return ChildRun(
        results=[*over.results, *here.results],
        import_problem=here.import_problem or over.import_problem,
        stopped_in=here.stopped_in or over.stopped_in,
        log_tail=here.log_tail or over.log_tail,
        forged="; ".join(why for why in (here.forged, over.forged) if why),
    )


def _run_one_child(
    step: Step, source: Path, tests: list[str], settings: Settings, remote: bool = False
) -> ChildRun:
    catalog = load_catalog()
    import_limit = settings.import_timeout or catalog.import_timeout

    def test_limit(test: str) -> float:
        return settings.test_timeout or step.limit(test)

    with tempfile.TemporaryDirectory(prefix=f"grade-{step.id}-") as scratch:
        events_path = Path(scratch) / "events.jsonl"
        events_path.touch()
        # No canary where no submission code runs; the events' order is checked all the same.
        canary = f"test_canary_{secrets.token_hex(6)}" if settings.sandboxed and not remote else ""
        job = Job(
            step=step.id,
            source=str(source),
            events=str(events_path),
            only=tuple(tests),
            canary=canary,
            remote=remote,
        )
        base = (
            sandbox.environment(os.environ, Path(scratch) / "home")
            if settings.sandboxed
            else os.environ
        )
        env = {
            **base,
            ENV_VAR: job.to_env(),
            "PYTHONDONTWRITEBYTECODE": "1",
            # The child needs no installed pytest plugin (the grader's comes from
            # exercises/conftest.py); loading them all cost about half a second each time.
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        }
        env.pop("PYTEST_ADDOPTS", None)
        # Without pytest's unraisable-exception plugin: at the end of a session it runs a
        # full garbage collection, which in a child forked from the warm process touches
        # every object the two share and so copies their pages: 0.3-0.8 s of CPU a step
        # (measured on step 09). The grade never depends on what that plugin reports.
        arguments = [
            *(str(step.exercise_dir), "-q", "--no-header", "--tb=native"),
            *("-p", "no:unraisableexception"),
        ]
        log_path = Path(scratch) / "pytest.log"
        with open(events_path, encoding="utf-8") as events:
            child = start_child(arguments, env, log_path, needs=_needs(step))
            run = _watch(child, events, import_limit, test_limit, canary, strict=remote)
            # Every run, not only a hung one: a process the graded code started and left
            # behind must not outlive its grading (it could rewrite results afterwards).
            child.kill()
        # No log at all: the child never started (a warm process that gave up on it).
        log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
        run.log_tail = _last_error_line(log)
    return run


def _watch(
    child: Child,
    events: TextIO,
    import_limit: float,
    test_limit: Callable[[str], float],
    canary: str = "",
    strict: bool = False,
) -> ChildRun:
    """Follow the child's events until it ends; end it if a phase runs out of time.

    With a `canary` (an instructor's run), the events must also be the ones the child's
    grader writes, in its order: one `imported`, each `result` right after the `start` of
    the same test, the canary failing. Anything else means the submission wrote events,
    or changed how its tests run, and `forged` says so. `strict` checks that order
    without a canary (a remote child, see autograder.remote).
    """
    run = ChildRun()
    phase, phase_started, current, module = "startup", time.monotonic(), "", ""
    pending = ""
    seen: set[str] = set()  # kinds of event that come once
    canary_outcome = ""

    def forged(why: str) -> None:
        if (canary or strict) and not run.forged:
            run.forged = why

    while True:
        exited = child.poll() is not None
        pending += events.read()
        *lines, pending = pending.split("\n")
        for line in lines:
            try:
                event = json.loads(line)
                kind = event["event"]
            except (ValueError, TypeError, KeyError):
                forged("the grader's report holds a line the grader did not write")
                continue
            phase_started = time.monotonic()
            if kind in {"imported", "done"}:
                if kind in seen:
                    forged(f"the grader's report says {kind!r} twice")
                seen.add(kind)
            if kind == "import":
                phase, module = "import", event["module"]
            elif kind == "import_error":
                run.import_problem = ("import_error", event["message"])
            elif kind == "imported":
                phase = "between"
            elif kind == "start":
                if phase != "between":
                    forged("a test started while another ran, or before the import")
                phase, current = "test", event["test"]
            elif kind == "result":
                if phase != "test" or event.get("test") != current:
                    forged("a result came for a test that was not running")
                    continue
                phase, current = "between", ""
                if canary and event["test"] == canary:
                    canary_outcome = event.get("outcome", "")
                    if canary_outcome == "passed":
                        forged("a test that always fails passed")
                    continue
                run.results.append(event)
            elif kind == "app_starting":
                if not strict or phase != "test":
                    forged("an app started outside a test of an instructor's run")
                    continue
                phase = "app_start"
            elif kind == "app_serving":
                if phase != "app_start":
                    forged("an app was said to serve that was not starting")
                    continue
                phase = "test"
            elif kind == "done":
                phase = "done"
        if exited:
            break
        limit = {
            "startup": STARTUP_LIMIT,
            "import": import_limit,
            # A remote job starting the app's process for a test (autograder.remote): its
            # import and start-up, which a learner's run bounds by the import's limit and
            # the test's. The process's start is the grader's cost, not the test's.
            "app_start": import_limit + test_limit(current),
        }.get(phase) or test_limit(current)
        if time.monotonic() - phase_started > limit:
            child.kill()
            if phase == "import":
                run.import_problem = (
                    "import_error",
                    f"Importing {module}.py did not finish within {import_limit:g} s. "
                    "Is there an infinite loop (or a call that never returns) at the top "
                    "level of the module?",
                )
            elif phase == "test":
                run.stopped_in = (
                    current,
                    "timeout",
                    f"Ran out of time: this test did not finish within {limit:g} s. "
                    "Look for an infinite loop, or a call that never returns, in the code "
                    "it exercises.",
                )
            elif phase == "app_start":
                run.stopped_in = (
                    current,
                    "timeout",
                    f"The app did not start serving within {limit:g} s. Look for an "
                    "infinite loop, or a call that never returns, at the top level of your "
                    "modules or in the lifespan's start-up.",
                )
            elif phase == "startup":
                run.import_problem = ("timeout", "The grader could not start this step in time.")
            return run
        time.sleep(POLL_INTERVAL)
    code = child.poll()
    if phase == "done" and canary and not canary_outcome and run.results:
        forged("the result of a test that always fails is missing")
    if phase in {"test", "app_start"} and current:
        run.stopped_in = (current, "crashed", crashed_message(code))
    elif phase == "import" and not run.import_problem:
        run.import_problem = (
            "import_error",
            f"Importing {module}.py ended the grading process (exit code {code}). Does the "
            "module call os._exit() or crash the interpreter?",
        )
    return run


def _last_error_line(log: str) -> str:
    """The most telling line of a pytest log: its last error, else its last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("E ", "ERROR")):
            return line.removeprefix("E").strip()
    return lines[-1] if lines else ""
