"""A broken step costs that step its points, with a plain message, and nothing else.

Each case below is step 01's solution with one way of breaking a Python module. The
grader must finish, score every test of the step zero (or keep the ones that really
passed), say why in one sentence, and never show a traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autograder.catalog import Step, load_catalog
from autograder.engine import MAX_TIMEOUTS_PER_STEP, Settings, grade_step
from autograder.remote import http_only_tests
from tests.helpers import ROOT, require_shipped_stubs, run_pytest_exercises

STEP = load_catalog().step("01")
FAST = {"import_timeout": 3.0, "test_timeout": 2.0}  # short limits keep this file quick

BREAKAGES = {
    # name: (edit of the solution, outcome every failing test must have, words in the message)
    "syntax error": (
        lambda text: text.replace("class AnalyzeRequest(BaseModel):", "class AnalyzeRequest("),
        "import_error",
        "line",
    ),
    "exception at import": (
        lambda text: "raise RuntimeError('no model file')\n" + text,
        "import_error",
        "RuntimeError: no model file",
    ),
    "sys.exit at import": (
        lambda text: "import sys\nsys.exit(3)\n" + text,
        "import_error",
        "sys.exit",
    ),
    "infinite loop at import": (
        lambda text: "while True:\n    pass\n" + text,
        "import_error",
        "did not finish",
    ),
    "missing import": (lambda text: "import numpyy\n" + text, "import_error", "numpyy"),
    "no app object": (lambda text: text + "\ndel app\n", None, "must define `app`"),
}


# Each check runs as a learner's run grades and as an instructor's does: step 01 is
# `over_http`, so there its tests reach the app in a process of its own.
MODES = pytest.mark.parametrize("sandboxed", [False, True], ids=["learner", "instructor"])


def broken_copy(tmp_path: Path, edit, step: Step = STEP) -> Path:  # type: ignore[no-untyped-def]
    """A copy of the step's solution with `edit` made to its app.py."""
    folder = tmp_path / step.slug
    shutil.copytree(step.solution_dir, folder)
    module = folder / "app.py"
    module.write_text(edit(module.read_text(encoding="utf-8")), encoding="utf-8")
    return folder


def grade_only(step: Step, folder: Path, only: set[str], sandboxed: bool) -> dict[str, Any]:
    """The records of the tests named in `only`, graded on `folder`, by test name."""
    settings = Settings(
        source=lambda step: folder, select=lambda step, test: test in only, sandboxed=sandboxed
    )
    return {record.test: record for record in grade_step(step, settings)}


@MODES
@pytest.mark.parametrize("name", list(BREAKAGES))
def test_a_module_that_cannot_load_scores_zero_with_one_sentence(
    tmp_path: Path, name: str, sandboxed: bool
) -> None:
    edit, outcome, words = BREAKAGES[name]
    folder = broken_copy(tmp_path, edit)
    records = grade_step(STEP, Settings(source=lambda step: folder, sandboxed=sandboxed, **FAST))
    assert len(records) == len(STEP.tests)
    assert all(record.score == 0 for record in records), [r.test for r in records if r.score]
    for record in records:
        if outcome:
            assert record.outcome == outcome, (record.test, record.outcome, record.message)
        assert words in record.message, record.message
        assert "Traceback" not in record.message


@MODES
def test_a_handler_that_loops_forever_costs_only_its_tests(tmp_path: Path, sandboxed: bool) -> None:
    folder = broken_copy(
        tmp_path,
        lambda text: text.replace("    words = [", "    while True:\n        pass\n    words = ["),
    )
    settings = Settings(source=lambda step: folder, sandboxed=sandboxed, **FAST)
    records = {r.test: r for r in grade_step(STEP, settings)}
    assert records["test_health_returns_ok"].passed, records["test_health_returns_ok"].message
    timed_out = [r for r in records.values() if r.outcome == "timeout"]
    assert 1 <= len(timed_out) <= MAX_TIMEOUTS_PER_STEP
    assert "a second time too" in timed_out[0].message, timed_out[0].message
    assert all("did not finish within 2 s" in r.message for r in timed_out)
    assert all(r.score == 0 for r in records.values() if r.test != "test_health_returns_ok")


@MODES
def test_a_test_with_a_limit_of_its_own_is_given_it(tmp_path: Path, sandboxed: bool) -> None:
    # course.toml gives a test that does far more than its step's others a `timeout` of
    # its own; here /health takes longer than the step's limit, and less than its own.
    folder = broken_copy(
        tmp_path,
        lambda text: text.replace(
            'return {"status": "ok"}',
            'import time\n    time.sleep(2.5)\n    return {"status": "ok"}',
        ),
    )
    tests = tuple(
        replace(test, timeout=8.0) if test.name == "test_health_returns_ok" else test
        for test in STEP.tests
    )
    step = replace(STEP, timeout=1.5, tests=tests)
    settings = Settings(
        source=lambda step: folder,
        select=lambda step, test: test == "test_health_returns_ok",
        sandboxed=sandboxed,
    )
    [record] = grade_step(step, settings)
    assert record.passed, record.message


def test_an_instructors_run_does_not_count_the_apps_start_against_a_test(
    tmp_path: Path,
) -> None:
    # Over HTTP, each test starts the app's process: on a busy machine that start once took
    # a correct submission's test past its limit. The start has a limit of its own (the
    # import's and the test's, the time a learner's run gives the same code), and the test
    # is timed from the moment the app serves. Here the start alone outlasts the test's limit.
    folder = broken_copy(tmp_path, lambda text: "import time\ntime.sleep(3)\n" + text)
    only = {"test_health_returns_ok", "test_analyze_counts_characters_and_words"}
    settings = Settings(
        source=lambda step: folder,
        select=lambda step, test: test in only,
        sandboxed=True,
        import_timeout=8.0,
        test_timeout=1.5,
    )
    records = grade_step(STEP, settings)
    assert {r.test for r in records if r.passed} == only, [r.message for r in records]


def test_an_instructors_run_stops_an_app_that_never_starts_serving(tmp_path: Path) -> None:
    hanging = (
        "\nimport contextlib as _contextlib, time as _time\n"
        "@_contextlib.asynccontextmanager\n"
        "async def _never_ready(app):\n"
        "    while True:\n"
        "        _time.sleep(0.1)\n"
        "    yield\n"
        "app.router.lifespan_context = _never_ready\n"
    )
    folder = broken_copy(tmp_path, lambda text: text + hanging)
    settings = Settings(
        source=lambda step: folder,
        select=lambda step, test: test == "test_health_returns_ok",
        sandboxed=True,
        **FAST,
    )
    [record] = grade_step(STEP, settings)
    assert record.outcome == "timeout", (record.outcome, record.message)
    assert "did not start serving within" in record.message, record.message


@MODES
def test_what_the_app_printed_comes_with_its_failure(tmp_path: Path, sandboxed: bool) -> None:
    folder = broken_copy(
        tmp_path,
        lambda text: text.replace(
            "    words = [", "    print('analyzing', repr(document.text))\n    words = ["
        ).replace("characters=len(document.text),", "characters=len(document.text) + 1,"),
    )
    settings = Settings(source=lambda step: folder, sandboxed=sandboxed, **FAST)
    records = {r.test: r for r in grade_step(STEP, settings)}
    health, counted = (
        records["test_health_returns_ok"],
        records["test_analyze_counts_characters_and_words"],
    )
    assert health.passed and health.output == "", health.output  # /health prints nothing
    assert not counted.passed
    # What this test's requests printed, and no other test's (each gets a fresh app).
    assert counted.output.splitlines() == ["analyzing 'Hello,  brave new world!'"], counted.output


OPENAI_STEP = load_catalog().step("10")


def test_tests_on_a_fixture_built_on_app_url_run_over_http() -> None:
    over = http_only_tests(OPENAI_STEP)
    assert "test_the_stream_wire_format" in over  # `served`: the grader's app_url
    # A test that lends its models to the app (`lent`, on the grader's app_server) too,
    # and one that starts a second app with other settings (app_server's `settings=`).
    assert "test_chunks_are_sent_as_the_model_makes_them" in over
    assert "test_a_missing_or_wrong_key_is_a_401_in_openais_shape" in over


# Which tests of a test file run apart, read from its source: each test is named after one
# of step 01's, so the catalog knows it; its fixtures say whether it may.
QUALIFYING = """
import importlib
import pytest

@pytest.fixture(scope="module")
def imported():
    return importlib.import_module("app")  # the course's copy, in a remote job

@pytest.fixture(scope="module")
def deployed(graded_folder, request):
    return graded_folder  # runs the folder's files in processes of their own

@pytest.fixture(scope="session")
def shared(graded_folder):
    return graded_folder

def test_health_returns_ok(imported): ...
def test_analyze_counts_characters_and_words(deployed): ...
def test_unique_words_ignore_case(client):
    from app import app
def test_top_words_are_ranked_by_count_then_alphabetically(client):
    import asyncio
def test_punctuation_stays_part_of_a_word(shared): ...
def test_the_readme_example_is_answered_exactly(graded_folder, tmp_path, monkeypatch): ...
"""


def test_which_tests_run_apart_is_read_from_their_fixtures_and_bodies(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text(QUALIFYING, encoding="utf-8")

    class Elsewhere(Step):  # step 01, its tests read from this file
        @property
        def exercise_dir(self) -> Path:
            return tmp_path

    step = Elsewhere(**{name: getattr(STEP, name) for name in STEP.__dataclass_fields__})
    assert http_only_tests(step) == {
        "test_analyze_counts_characters_and_words",  # a fixture per module, on graded_folder
        "test_top_words_are_ranked_by_count_then_alphabetically",  # imports no step module
    }


def test_a_suite_and_a_deployment_run_apart() -> None:
    # Step 12's suites and step 15's deployment run the graded folder's files in
    # processes of their own; step 15's tests that run `create_app()` here stay.
    suite, capstone = load_catalog().step("12"), load_catalog().step("15")
    assert http_only_tests(suite) == {test.name for test in suite.tests}
    over = http_only_tests(capstone)
    assert "test_a_session_continues_through_the_other_worker" in over  # `deployment`
    assert "test_catches_other_users_job" in over  # `runs`
    assert "test_a_job_waits_for_a_worker_on_the_queue" in over  # `app_server`
    assert "test_concurrent_predictions_share_model_calls" not in over  # `service_here`


@MODES
def test_under_app_url_the_apps_exception_is_told_as_the_cause(
    tmp_path: Path, sandboxed: bool
) -> None:
    route = "def embeddings(batch: EmbeddingRequest, registry: RegistryDep, _: KeyDep)"
    route += " -> EmbeddingList:\n"
    text = (OPENAI_STEP.solution_dir / "app.py").read_text(encoding="utf-8")
    assert route in text
    folder = broken_copy(
        tmp_path,
        lambda text: text.replace(route, route + "    raise RuntimeError('boom')\n"),
        OPENAI_STEP,
    )
    module = folder / "app.py"
    only = {"test_embeddings_match_the_embedder_in_both_formats", "test_usage_adds_up"}
    records = grade_only(OPENAI_STEP, folder, only, sandboxed)
    assert records["test_usage_adds_up"].passed, records["test_usage_adds_up"].message
    failed = records["test_embeddings_match_the_embedder_in_both_formats"]
    line = text[: text.index(route)].count("\n") + 2
    # As in a grading child: the app's exception first, then what the test saw of it.
    cause = f"Your code raised RuntimeError: boom at {module}, line {line}, in embeddings()."
    assert failed.message.startswith(cause), failed.message
    assert "The test saw:" in failed.message and "500" in failed.message, failed.message


STREAMING_STEP = load_catalog().step("08")


@MODES
def test_an_exception_that_breaks_a_stream_is_told_as_the_cause(
    tmp_path: Path, sandboxed: bool
) -> None:
    # The stream's body can reach the test complete before the app's note of what broke
    # it: the cause must be waited for, and told, in both modes.
    caught = "    except Exception:\n        # The 200"
    folder = broken_copy(
        tmp_path,
        lambda text: text.replace(caught, caught.replace("Exception", "RuntimeError")),
        STREAMING_STEP,
    )
    only = {"test_a_model_failure_mid_answer_sends_an_error_event_then_done"}
    [record] = grade_only(STREAMING_STEP, folder, only, sandboxed).values()
    assert record.outcome in ("failed", "error"), (record.outcome, record.message)
    assert record.message.startswith("Your code raised OSError: reset at "), record.message
    assert "The test saw: POST /chat/stream while the model raises OSError" in record.message


@MODES
def test_a_dependency_app_overrides_names_must_exist_in_either_mode(
    tmp_path: Path, sandboxed: bool
) -> None:
    renamed = lambda text: text.replace("get_chat_model", "the_model")  # noqa: E731
    folder = broken_copy(tmp_path, renamed, STREAMING_STEP)
    only = {"test_max_tokens_out_of_range_is_a_422"}  # a fast_client test: app_overrides
    [record] = grade_only(STREAMING_STEP, folder, only, sandboxed).values()
    assert record.outcome == "failed", (record.outcome, record.message)
    assert record.message == "app.py must define get_chat_model (a dependency the tests replace)."


def test_app_overrides_replace_a_dependency_with_the_courses_code_only() -> None:
    from fastapi import FastAPI

    from autograder.appserver import use_overrides

    app = FastAPI()
    with pytest.raises(ValueError, match="not of coursekit"):
        use_overrides(app, [("autograder.child:Job", "os:system")])
    use_overrides(app, [("autograder.child:Job", "coursekit.llm:get_model")])
    from autograder.child import Job
    from coursekit.llm import get_model

    assert app.dependency_overrides == {Job: get_model}


ERRORS_STEP = load_catalog().step("04")


@MODES
def test_a_name_patches_replace_must_exist_in_either_mode(tmp_path: Path, sandboxed: bool) -> None:
    # Step 04's lifespan calls registry.load_model, which its loading tests replace.
    folder = broken_copy(tmp_path, lambda text: text, ERRORS_STEP)
    registry = folder / "registry.py"
    text = registry.read_text(encoding="utf-8")
    registry.write_text(
        text.replace("load_model", "load_artifact_of").replace(
            "from coursekit.models import LoadedModel, load_artifact_of",
            "from coursekit.models import LoadedModel\n"
            "from coursekit.models import load_model as load_artifact_of",
        ),
        encoding="utf-8",
    )
    only = {"test_a_model_that_fails_to_load_is_a_503_not_a_crash"}
    [record] = grade_only(ERRORS_STEP, folder, only, sandboxed).values()
    assert record.outcome == "failed", (record.outcome, record.message)
    assert record.message == "registry.py must define load_model (a name the tests replace)."


def test_patches_replace_a_name_of_the_steps_modules_with_the_courses_code_only() -> None:
    import types

    from autograder.appserver import use_patches

    module = types.ModuleType("registry_of_this_test")
    module.load_model = print  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        with pytest.raises(ValueError, match="not of coursekit"):
            use_patches([(f"{module.__name__}:load_model", "os:system")], (module.__name__,))
        with pytest.raises(ValueError, match="not a module of the step"):
            use_patches([("os:system", "coursekit.failing_loads:wine_file_missing")], ())
        target = f"{module.__name__}:load_model"
        use_patches([(target, "coursekit.failing_loads:wine_file_missing")], (module.__name__,))
    finally:
        del sys.modules[module.__name__]
    from coursekit.failing_loads import wine_file_missing

    assert module.load_model is wine_file_missing  # type: ignore[attr-defined]


def test_set_ups_a_test_applies_are_the_courses_code_only() -> None:
    import types

    from fastapi import FastAPI

    from autograder.appserver import Changes, use_changes

    app, module = FastAPI(), types.ModuleType("app")
    with pytest.raises(ValueError, match="not of coursekit"):
        use_changes(app, module, Changes(setup=["os:system"]), ())
    use_changes(app, module, Changes(setup=["coursekit.app_setups:http_errors"]), ())
    paths = {route.path for route in app.routes}  # type: ignore[attr-defined]
    assert {"/test-only/conflict", "/test-only/missing"} <= paths
    # What travels to the app's process is read back as it was.
    changes = Changes([("registry:load_model", "coursekit.m:f")], ["coursekit.m:g"])
    assert Changes.from_options(list(changes.options())) == changes


def _slow_the_first_times(runs: int):  # type: ignore[no-untyped-def]
    """An edit: the first `runs` grading children see /analyze run out of time (as a
    correct solution on a busy machine can); each child counts itself in a file."""

    def edit(text: str) -> str:
        counting = (  # a child may import app.py more than once: count processes
            "import os as _os\n"
            "from pathlib import Path as _Path\n"
            "_RUNS = _Path(__file__).with_name('runs.txt')\n"
            "_SEEN = _RUNS.read_text().split() if _RUNS.exists() else []\n"
            "if str(_os.getpid()) not in _SEEN:\n"
            "    _SEEN.append(str(_os.getpid()))\n"
            "    _RUNS.write_text(' '.join(_SEEN))\n"
            "_RUN = _SEEN.index(str(_os.getpid()))\n"
        )
        slow = f"    if _RUN < {runs}:\n        raise TimeoutError('the model server was slow')\n"
        return counting + text.replace("    words = [", slow + "    words = [")

    return edit


def test_a_test_whose_wait_ran_out_runs_again_before_it_counts(tmp_path: Path) -> None:
    folder = broken_copy(tmp_path, _slow_the_first_times(1))
    records = grade_step(STEP, Settings(source=lambda step: folder, **FAST))
    assert all(r.passed for r in records), [(r.test, r.message) for r in records if not r.passed]
    # The first run, the first slow test alone, then the other slow ones together.
    assert len((folder / "runs.txt").read_text().split()) == 3


def test_a_wait_that_runs_out_again_alone_counts_and_the_others_are_not_rerun(
    tmp_path: Path,
) -> None:
    folder = broken_copy(tmp_path, _slow_the_first_times(99))
    records = {r.test: r for r in grade_step(STEP, Settings(source=lambda step: folder, **FAST))}
    assert records["test_health_returns_ok"].passed
    failed = [r for r in records.values() if not r.passed]
    assert len(failed) >= 2, "the edit must slow several tests"
    again = [r for r in failed if "a busy machine is not the cause" in r.message]
    assert len(again) == 1, [r.message for r in failed]
    assert all("TimeoutError" in r.message for r in failed), [r.message for r in failed]
    assert len((folder / "runs.txt").read_text().split()) == 2


@MODES
def test_a_handler_that_exits_the_process_costs_only_its_test(
    tmp_path: Path, sandboxed: bool
) -> None:
    folder = broken_copy(
        tmp_path, lambda text: text.replace('return {"status": "ok"}', "import os\n    os._exit(1)")
    )
    settings = Settings(source=lambda step: folder, sandboxed=sandboxed, **FAST)
    records = {r.test: r for r in grade_step(STEP, settings)}
    assert records["test_health_returns_ok"].outcome == "crashed"
    assert "os._exit()" in records["test_health_returns_ok"].message
    others = [r for name, r in records.items() if name != "test_health_returns_ok"]
    assert all(r.passed for r in others), [r.test for r in others if not r.passed]


def test_a_cpu_bound_loop_in_a_handler_is_stopped(tmp_path: Path) -> None:
    folder = broken_copy(
        tmp_path,
        lambda text: text.replace(
            'return {"status": "ok"}', "total = 0\n    while True:\n        total += 1"
        ),
    )
    records = {r.test: r for r in grade_step(STEP, Settings(source=lambda step: folder, **FAST))}
    assert records["test_health_returns_ok"].outcome == "timeout"
    assert records["test_analyze_counts_characters_and_words"].passed


def test_pytest_exercises_survives_a_hanging_import(tmp_path: Path) -> None:
    """The issue's own scenario, through the learner's command, in a copy of the course."""
    require_shipped_stubs()
    copy = tmp_path / "course"
    for name in ("autograder", "exercises", "solutions"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("course.toml", "pyproject.toml"):
        shutil.copy(ROOT / name, copy / name)
    catalog = copy / "course.toml"  # a short import limit keeps this test quick
    text = catalog.read_text(encoding="utf-8")
    catalog.write_text(re.sub(r"import_timeout = \d+", "import_timeout = 3", text), "utf-8")
    stub = copy / "exercises" / STEP.slug / "app.py"
    stub.write_text("while True:\n    pass\n" + stub.read_text(encoding="utf-8"), encoding="utf-8")
    run = run_pytest_exercises(tmp_path, cwd=copy)
    total = sum(step.max_points for step in load_catalog().steps)
    assert run.stdout.rstrip().splitlines()[-1] == f"Score: 0/{total}", run.stdout
    assert "did not finish within" in run.stdout
    assert run.results["score"] == 0 and run.results["max_score"] == total
    json.dumps(run.results)  # a valid results.json was written even so


def _running(pid: int) -> bool:
    """True while `pid` runs (a zombie, killed but not yet reaped, does not count)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@pytest.mark.skipif(os.name == "nt", reason="process groups: Windows ends trees with taskkill")
def test_a_process_the_code_leaves_behind_is_ended_with_the_run(tmp_path: Path) -> None:
    pid_file = tmp_path / "left-behind.pid"
    spawn = (
        "import subprocess, sys\n"
        "_left = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(_left.pid))\n"
    )
    folder = broken_copy(tmp_path, lambda text: spawn + text)
    records = grade_step(STEP, Settings(source=lambda step: folder))
    assert all(record.passed for record in records), "the copy is correct but for its leftover"
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10  # SIGKILL is immediate; this only waits for the kernel
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid), "a process started by the graded code outlived its grading"


def test_an_instructors_run_shows_the_submission_no_secret(tmp_path: Path) -> None:
    """`--source-root` grades others' code: it must not read the instructor's environment."""
    seen = tmp_path / "seen.json"
    spy = (
        "import json, os, pathlib\n"
        "_initial = pathlib.Path('/proc/self/environ')\n"
        "_block = _initial.read_bytes().decode(errors='replace') if _initial.exists() else ''\n"
        f"pathlib.Path({str(seen)!r}).write_text(json.dumps([dict(os.environ), _block]))\n"
    )
    root = tmp_path / "submission"
    root.mkdir()
    shutil.copytree(broken_copy(tmp_path, lambda text: spy + text), root / STEP.slug)
    secret = "instructor-token-7d1c"
    env = {**os.environ, "GRADESCOPE_API_TOKEN": secret, "AUTOGRADER_SHARED_WARM": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", STEP.id, "--source-root", str(root)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert f"{STEP.max_points}/{STEP.max_points}" in result.stdout, result.stdout + result.stderr
    environment, initial_block = json.loads(seen.read_text())
    assert secret not in json.dumps(environment), "the submission read an instructor's variable"
    assert secret not in initial_block, "the secret was in the process's initial environment"
    assert environment.get("HOME") != os.environ.get("HOME"), "the submission got the real home"
    assert "PATH" in environment


def test_a_submission_that_rewrites_the_grader_scores_zero_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """A submission that rewrites a graded test (so the next student passes) or removes a
    grader module gets no score, and the checkout is as it was for the next student."""
    require_shipped_stubs(STEP)
    course = tmp_path / "course"  # a checkout of its own: the attack must not touch ROOT's
    skip = shutil.ignore_patterns("__pycache__", ".model_cache", "*.lock")
    for name in ("autograder", "coursekit", "exercises"):
        shutil.copytree(ROOT / name, course / name, ignore=skip)
    for name in ("course.toml", "pyproject.toml"):
        shutil.copy2(ROOT / name, course / name)
    tests = course / "exercises" / STEP.slug / "test_app.py"
    before = {path: path.read_bytes() for path in course.rglob("*") if path.is_file()}
    always_passing = "".join(f"def {test.name}():\n    pass\n" for test in STEP.tests)
    attack = (
        "import pathlib\n"
        f"pathlib.Path({str(tests)!r}).write_text({always_passing!r})\n"
        f"pathlib.Path({str(course / 'autograder' / 'reports.py')!r}).unlink(missing_ok=True)\n"
        f"pathlib.Path({str(course / 'exercises' / 'conftest.py')!r}).write_text('')\n"
    )

    def grade_submission(edit) -> tuple[str, dict]:  # type: ignore[no-untyped-def]
        root = tmp_path / "submissions" / str(len(list(tmp_path.glob("submissions/*"))))
        shutil.copytree(STEP.exercise_dir, root / STEP.slug)
        app = root / STEP.slug / "app.py"
        app.write_text(edit(app.read_text(encoding="utf-8")), encoding="utf-8")
        results = root / "results.json"
        command = [sys.executable, "-m", "autograder", "grade", STEP.id, "--source-root"]
        completed = subprocess.run(
            [*command, str(root), "--json", str(results)],
            cwd=course,
            env={**os.environ, "PYTHONPATH": str(course), "AUTOGRADER_SHARED_WARM": "0"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = " ".join((completed.stdout + completed.stderr).split())
        return output, json.loads(results.read_text(encoding="utf-8"))

    output, results = grade_submission(lambda text: attack + text)
    assert results["score"] == 0, output
    assert "files of the grader changed" in output and "test_app.py" in output, output
    after = {path: path.read_bytes() for path in course.rglob("*") if path.is_file()}
    changed = [
        path.relative_to(course).as_posix()
        for path in {*before, *after}
        if before.get(path) != after.get(path)
        and "__pycache__" not in path.parts
        and ".model_cache" not in path.parts
        and not path.name.endswith(".lock")
        and ".autograder" not in path.parts
    ]
    assert not changed, f"the grader's checkout was left changed: {changed}"
    # The next student, graded from the same checkout: the stub as shipped still scores 0
    # and the solution full points (the rewritten test is gone).
    output, results = grade_submission(lambda text: text)
    assert results["score"] == 0, output
    solution = (STEP.solution_dir / "app.py").read_text(encoding="utf-8")
    output, results = grade_submission(lambda text: solution)
    assert results["score"] == STEP.max_points, output


# Code a submission could put at the top of its app.py to raise its own grade from inside
# the grading process (issue: "two lines at the top of one app.py give that step full
# marks"). Each starts from the stub as shipped, whose true score is zero.
FORGERIES = {
    "every test made to pass": (
        "import _pytest.python\n_pytest.python.Function.runtest = lambda self: None\n"
    ),
    "every result rewritten as passed": (
        "import autograder.child as _child\n"
        "_emit = _child.ChildPlugin.emit\n"
        "def _passed(self, event, **data):\n"
        "    if event == 'result':\n"
        "        data.update(outcome='passed', message='', symptom='')\n"
        "    return _emit(self, event, **data)\n"
        "_child.ChildPlugin.emit = _passed\n"
    ),
    "passed results appended to the report": (
        "import json, os, tomllib, pathlib\n"
        "_job = json.loads(os.environ['AUTOGRADER_CHILD'])\n"
        "_catalog = tomllib.loads(pathlib.Path('course.toml').read_text())\n"
        "_step = next(s for s in _catalog['steps'] if s['id'] == _job['step'])\n"
        "with open(_job['events'], 'a') as _events:\n"
        "    _events.write(json.dumps({'event': 'imported'}) + '\\n')\n"
        "    for _test in _step['tests']:\n"
        "        for _kind in ('start', 'result'):\n"
        "            _events.write(json.dumps({'event': _kind, 'test': _test['name'],\n"
        "                'item': _test['name'], 'outcome': 'passed', 'message': '',\n"
        "                'symptom': '', 'duration': 0.0, 'output': ''}) + '\\n')\n"
        "    _events.write(json.dumps({'event': 'done'}) + '\\n')\n"
        "os._exit(0)\n"
    ),
}


# A step graded in the submission's process (not `over_http`): there the canary and the
# order of events are what catch a forgery. Step 01 is `over_http`: its tests run where
# the submission's code cannot reach them (autograder/remote.py).
IN_PROCESS_STEP = load_catalog().step("07")
FUTURE = "from __future__ import annotations\n"


def grade_forged(
    tmp_path: Path, step: Step, forgery: str, start: Path, module: str = "app.py"
) -> tuple[int, str]:
    """The score and output of an instructor's run of `start`'s `module` with `forgery` on top."""
    root = tmp_path / "submission"
    shutil.copytree(start, root / step.slug)
    forged = root / step.slug / module
    # On top, after a `from __future__` import (which must come first) if there is one.
    head, future, rest = forged.read_text(encoding="utf-8").rpartition(FUTURE)
    forged.write_text(head + future + FORGERIES[forgery] + rest, encoding="utf-8")
    results = tmp_path / "results.json"
    command = [sys.executable, "-m", "autograder", "grade", step.id, "--source-root"]
    completed = subprocess.run(
        [*command, str(root), "--json", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = " ".join((completed.stdout + completed.stderr).split())
    return json.loads(results.read_text(encoding="utf-8"))["score"], output


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
def test_an_instructors_run_gives_a_forging_submission_its_true_score(
    tmp_path: Path, forgery: str
) -> None:
    require_shipped_stubs(STEP, IN_PROCESS_STEP)
    assert http_only_tests(STEP) == {test.name for test in STEP.tests}
    # Over HTTP the forgery changes nothing: the stub's own failures are what is reported.
    score, output = grade_forged(tmp_path / "over", STEP, forgery, STEP.exercise_dir)
    assert score == 0, output
    assert "cannot be trusted" not in output, output
    expected = "in health() still raises NotImplementedError"
    if forgery == "passed results appended to the report":  # no grader's job to read there
        expected = "KeyError: 'AUTOGRADER_CHILD'"
    assert expected in output, output
    # In the submission's process the forgery is caught, and the step scores zero.
    assert not http_only_tests(IN_PROCESS_STEP)
    score, output = grade_forged(
        tmp_path / "here", IN_PROCESS_STEP, forgery, IN_PROCESS_STEP.exercise_dir
    )
    assert score == 0, output
    assert "cannot be trusted" in output, output


@pytest.mark.parametrize("forgery", ["every test made to pass", "every result rewritten as passed"])
def test_a_forgery_over_http_cannot_lower_a_correct_submissions_score(
    tmp_path: Path, forgery: str
) -> None:
    # The same lines on top of the solution: its tests ran apart, so it scores what it earns.
    score, output = grade_forged(tmp_path, STEP, forgery, STEP.solution_dir)
    assert score == STEP.max_points, output


# Step 12 grades the learner's suite by running it in processes of its own (a pytest per
# version of the service): its tests take the `graded_folder`, import none of it, and so
# run apart in an instructor's run, as tests over HTTP do.
SUITE_STEP = load_catalog().step("12")


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
def test_a_suite_forging_its_grade_gets_its_true_score(tmp_path: Path, forgery: str) -> None:
    require_shipped_stubs(SUITE_STEP)
    assert http_only_tests(SUITE_STEP) == {test.name for test in SUITE_STEP.tests}
    score, output = grade_forged(
        tmp_path, SUITE_STEP, forgery, SUITE_STEP.exercise_dir, module="test_service.py"
    )
    assert score == 0, output
    assert "cannot be trusted" not in output, output  # it changed nothing where tests ran
    expected = "pytest found no test in test_service.py"  # the stub's true failure
    if forgery == "passed results appended to the report":  # no grader's job to read there
        expected = "KeyError: 'AUTOGRADER_CHILD'"
    assert expected in output, output


# A submission that takes what the machine has: each starts from the solution, whose
# true score is full, and fails at import under the limits of an instructor's run.
EXHAUSTIONS = {
    "address space (8 GiB reserved)": (
        "import mmap\n_reserved = mmap.mmap(-1, 8 << 30)\n",
        ("Cannot allocate memory", "MemoryError"),
    ),
    "file size (a 2 GiB file)": (
        "import os, tempfile\n"
        "with open(os.path.join(tempfile.gettempdir(), 'big.bin'), 'wb') as _big:\n"
        "    _big.seek(2 << 30)\n"
        "    _big.write(b'x')\n",
        ("File too large",),
    ),
}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="limits enforced on Linux")
@pytest.mark.parametrize("exhaustion", EXHAUSTIONS, ids=list(EXHAUSTIONS))
def test_an_instructors_run_limits_what_a_submission_takes(tmp_path: Path, exhaustion: str) -> None:
    code, words = EXHAUSTIONS[exhaustion]
    root = tmp_path / "submission"
    root.mkdir()
    shutil.copytree(broken_copy(tmp_path, lambda text: code + text), root / STEP.slug)
    completed = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", STEP.id, "--source-root", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = " ".join((completed.stdout + completed.stderr).split())
    assert output.rstrip().endswith(f"Score: 0/{STEP.max_points}"), output
    assert any(word in output for word in words), output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_the_process_that_grades_over_http_refuses_debuggers() -> None:
    # Not dumpable: another process of the same user can neither trace it nor open its
    # /proc/PID/mem (autograder.sandbox.refuse_debuggers, called by a remote job).
    code = (
        "import ctypes\n"
        "from autograder.sandbox import refuse_debuggers\n"
        "libc = ctypes.CDLL(None)\n"
        "before = libc.prctl(3, 0, 0, 0, 0)\n"
        "assert refuse_debuggers()\n"
        "print(before, libc.prctl(3, 0, 0, 0, 0))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.split() == ["1", "0"], completed.stdout + completed.stderr
