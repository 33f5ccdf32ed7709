"""The platforms: GitHub Classroom's reporter input and workflow, Exercism's results v3,
Gradescope's autograder zip, and grading a whole class. Each is rendered from the
grader's records, so each is checked against course.toml's points."""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from autograder.catalog import Step
from autograder.platforms import classroom_result, exercism_results
from autograder.platforms.classroom import env_name, runner_id, workflow
from autograder.records import Record
from tests.helpers import ROOT, STEPS, require_shipped_stubs

WORKFLOW = ROOT / ".github" / "workflows" / "classroom.yml"
FIRST, SECOND, LAST = STEPS[0], STEPS[1], STEPS[-1]


def autograder(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autograder", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def submission_of(tmp_path: Path, *solved: Step, broken: Step | None = None) -> Path:
    """A student's copy of exercises/: the solutions of `solved`, stubs elsewhere, and
    a syntax error at the end of `broken`'s app.py."""
    root = tmp_path / "submission"
    for step in STEPS:
        kind = "solutions" if step in solved else "exercises"
        shutil.copytree(ROOT / kind / step.slug, root / step.slug)
    if broken is not None:
        app = root / broken.slug / "app.py"
        app.write_text(app.read_text(encoding="utf-8") + "\ndef broken(:\n", encoding="utf-8")
    return root


def record(step: Step, name: str, outcome: str, message: str = "") -> Record:
    test = step.test(name)
    return Record(
        step=step.id,
        step_title=step.title,
        test=name,
        points=test.points,
        score=test.points if outcome == "passed" else 0,
        outcome=outcome,  # type: ignore[arg-type]
        message=message,
        hint=test.hint,
        section=test.section,
    )


# --- GitHub Classroom ---------------------------------------------------------------


def test_the_classroom_workflow_has_a_runner_per_step_in_course_order() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    assert text == workflow(list(STEPS)), (
        "classroom.yml is not the one course.toml gives: run "
        "`python -m autograder classroom-workflow > .github/workflows/classroom.yml`"
    )
    data = yaml.safe_load(text)
    assert data[True] == ["push", "repository_dispatch", "workflow_dispatch"]  # YAML's `on`
    assert data["permissions"] == {"checks": "write", "actions": "read", "contents": "read"}
    job = data["jobs"]["run-autograding-tests"]
    assert job["if"] == "github.actor != 'github-classroom[bot]'"
    steps = job["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@")
    graders = [step for step in steps if "id" in step]
    assert [step["id"] for step in graders] == [runner_id(step) for step in STEPS]
    for grader, step in zip(graders, STEPS, strict=True):
        assert grader["run"] == f"python -m autograder grade {step.id} --github-output"
    reporter = steps[-1]
    assert reporter["uses"] == "classroom-resources/autograding-grading-reporter@v1"
    # The reporter reads `<runner id upper-cased>_RESULTS` for each runner it is given.
    assert reporter["with"]["runners"].split(",") == [runner_id(step) for step in STEPS]
    assert list(reporter["env"]) == [env_name(step) for step in STEPS]
    for step in STEPS:
        assert env_name(step) == f"{runner_id(step).upper()}_RESULTS"
        expected = f"${{{{steps.{runner_id(step)}.outputs.result}}}}"
        assert reporter["env"][env_name(step)] == expected


def github_result(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    output = tmp_path / "github_output"
    output.write_text("earlier=1\n", encoding="utf-8")  # another step's output stays
    completed = autograder("grade", *args, "--github-output", env={"GITHUB_OUTPUT": str(output)})
    lines = output.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "earlier=1" and len(lines) == 2, lines
    name, _, value = lines[1].partition("=")
    assert name == "result"
    return completed, json.loads(base64.b64decode(value))


def test_classroom_scores_each_test_by_its_points_partial_credit(tmp_path: Path) -> None:
    # Step 01's solution with /health answering "okay": every other test earns its points.
    root = submission_of(tmp_path, FIRST)
    app = root / FIRST.slug / "app.py"
    app.write_text(app.read_text(encoding="utf-8").replace('"ok"', '"okay"'), encoding="utf-8")
    completed, result = github_result(tmp_path, FIRST.id, "--source-root", str(root))
    assert completed.returncode == 0, completed.stdout  # the reporter judges, not the step
    assert result["status"] == "fail"
    assert result["max_score"] == FIRST.max_points
    scores = {test["name"]: test["score"] for test in result["tests"]}
    assert scores == {
        f"01 {test.name}": 0 if test.name == "test_health_returns_ok" else test.points
        for test in FIRST.tests
    }
    failed = [test for test in result["tests"] if test["status"] != "pass"]
    assert [test["name"] for test in failed] == ["01 test_health_returns_ok"]
    assert failed[0]["message"] and "def test_health_returns_ok" in failed[0]["test_code"]


def test_classroom_full_points_for_the_solution_and_zero_for_the_stub(tmp_path: Path) -> None:
    _, solved = github_result(tmp_path, FIRST.id, "--solutions")
    assert solved["status"] == "pass"
    assert [test["score"] for test in solved["tests"]] == [test.points for test in FIRST.tests]
    assert solved["max_score"] == sum(test["score"] for test in solved["tests"])
    require_shipped_stubs(FIRST)
    (tmp_path / "stub").mkdir()
    completed, stub = github_result(tmp_path / "stub", FIRST.id)
    assert completed.returncode == 0
    assert stub["status"] == "fail" and stub["max_score"] == FIRST.max_points
    assert {test["score"] for test in stub["tests"]} == {0}


def test_a_step_that_does_not_import_is_a_classroom_error() -> None:
    names = [test.name for test in FIRST.tests]
    records = [record(FIRST, name, "import_error", "SyntaxError in app.py") for name in names]
    result = classroom_result(records, list(STEPS))
    assert result["status"] == "error"
    assert result["max_score"] == FIRST.max_points
    assert all(test["score"] == 0 and test["status"] == "error" for test in result["tests"])


# --- Exercism results v3 ---------------------------------------------------------------


def test_exercism_tests_are_in_file_order_whatever_the_records_order() -> None:
    names = [test.name for test in FIRST.tests]
    records = [record(FIRST, name, "passed") for name in reversed(names)]
    records[0] = record(FIRST, records[0].test, "failed", "GET /x answered 500")
    result = exercism_results(records, list(STEPS))
    assert result["version"] == 3 and result["status"] == "fail"
    source = (FIRST.exercise_dir / "test_app.py").read_text(encoding="utf-8")
    in_file = sorted(names, key=lambda name: source.index(f"def {name}("))
    assert [test["name"].rsplit(": ", 1)[1] for test in result["tests"]] == in_file
    failed = [test for test in result["tests"] if test["status"] == "fail"]
    assert len(failed) == 1 and "GET /x answered 500" in failed[0]["message"]
    assert all("message" not in test for test in result["tests"] if test["status"] == "pass")
    assert {test["task_id"] for test in result["tests"]} == {1}


def exercism_run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "exercism.json"
    completed = subprocess.run(
        [sys.executable, *args, "--json", str(out), "--format", "exercism"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), completed.stdout + completed.stderr
    return json.loads(out.read_text(encoding="utf-8"))


def test_exercism_pass_from_pytest(tmp_path: Path) -> None:
    result = exercism_run(tmp_path, "-m", "pytest", f"exercises/{FIRST.slug}", "--solutions")
    assert result["version"] == 3 and result["status"] == "pass"
    assert len(result["tests"]) == len(FIRST.tests)
    for test in result["tests"]:
        assert test["status"] == "pass" and test["task_id"] == int(FIRST.id)
        assert test["test_code"].lstrip().startswith(("def test_", "@"))
        assert "message" not in test


def test_exercism_fail_for_a_wrong_answer_and_error_when_nothing_ran(tmp_path: Path) -> None:
    root = submission_of(tmp_path, FIRST, SECOND, broken=SECOND)
    (root / FIRST.slug / "app.py").write_text(
        (root / FIRST.slug / "app.py").read_text(encoding="utf-8").replace('"ok"', '"okay"'),
        encoding="utf-8",
    )
    common = ["-m", "autograder", "grade", "--source-root", str(root)]
    failing = exercism_run(tmp_path, *common, FIRST.id)
    assert failing["status"] == "fail"
    statuses = {test["name"].rsplit(": ", 1)[1]: test["status"] for test in failing["tests"]}
    assert statuses["test_health_returns_ok"] == "fail"
    assert "message" in next(t for t in failing["tests"] if t["status"] == "fail")
    broken = exercism_run(tmp_path, *common, SECOND.id)
    assert broken["status"] == "error" and broken["tests"] == []
    assert "SyntaxError" in broken["message"] or "syntax" in broken["message"].lower()


# --- Gradescope -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gradescope_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zip") / "autograder.zip"
    completed = autograder("gradescope", "--out", str(out))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return out


def gradescope_root(tmp_path: Path, archive: Path) -> Path:
    """A temporary /autograder: source/ unpacked from the zip, an empty results/."""
    root = tmp_path / "autograder"
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        opened.extractall(root / "source")
    assert "setup.sh" in names and "run_autograder" in names
    # No solution but the one step 15's suite is graded on (the grade needs it).
    solutions = {name.split("/")[1] for name in names if name.startswith("solutions/")}
    assert solutions == {LAST.slug}, solutions
    assert not any(name.startswith("tests/") for name in names)
    assert "requirements/grade.txt" in names
    for name in ("setup.sh", "run_autograder"):
        mode = opened.getinfo(name).external_attr >> 16
        assert mode & 0o111, f"{name} is not executable in the zip"
    return root


def run_autograder(root: Path, **env: str) -> dict:
    completed = subprocess.run(
        ["bash", str(root / "source" / "run_autograder")],
        capture_output=True,
        text=True,
        timeout=900,
        env={
            "PATH": os.environ["PATH"],
            "AUTOGRADER_ROOT": str(root),
            "AUTOGRADER_PYTHON": sys.executable,
            **env,
        },
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))


def test_gradescope_grades_only_the_learner_modules_of_a_submission(
    tmp_path: Path, gradescope_zip: Path
) -> None:
    root = gradescope_root(tmp_path, gradescope_zip)
    # The last step's suite is graded on the course's reference service, shipped for that.
    submission = submission_of(tmp_path, FIRST, SECOND, LAST)
    third = submission / STEPS[2].slug
    # A submission's own tests and conftest never grade it: both would pass anything.
    (third / "test_app.py").write_text("def test_anything():\n    pass\n", encoding="utf-8")
    (third / "conftest.py").write_text("raise SystemExit(0)\n", encoding="utf-8")
    # A process the submission leaves behind, in a session of its own, ends with the run.
    pids = tmp_path / "left.pids"
    app = submission / FIRST.slug / "app.py"
    app.write_text(
        app.read_text(encoding="utf-8")
        + "\nimport subprocess as _sp, sys as _sys\n"
        + "_left = _sp.Popen([_sys.executable, '-c', 'import time; time.sleep(600)'],"
        + " start_new_session=True)\n"
        + f"open({str(pids)!r}, 'a').write(f'{{_left.pid}}\\n')\n",
        encoding="utf-8",
    )
    shutil.copytree(submission, root / "submission" / "exercises")
    results = run_autograder(root)
    left = [int(pid) for pid in pids.read_text().split() if _alive(pid)]
    for pid in left:  # a failing check must not leave them running either
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes the submission started were still running: {left}"
    lost = [
        test["output"][:300]
        for test in results["tests"]
        if test["name"][:2] == LAST.id and test["score"] < test["max_score"]
    ]
    assert not lost, lost
    full = FIRST.max_points + SECOND.max_points + LAST.max_points
    assert results["score"] == full, results.get("output")
    assert results["max_score"] == sum(step.max_points for step in STEPS)
    earned = {test["name"].split(" ", 1)[0] for test in results["tests"] if test["score"]}
    assert earned == {FIRST.id, SECOND.id, LAST.id}
    assert results["score"] == sum(test["score"] for test in results["tests"])
    assert "Graded as" in results["output"]  # which user the submission ran as


def test_gradescope_writes_results_on_a_timeout_and_on_a_crash(
    tmp_path: Path, gradescope_zip: Path
) -> None:
    root = gradescope_root(tmp_path, gradescope_zip)
    shutil.copytree(submission_of(tmp_path, FIRST), root / "submission")
    timed_out = run_autograder(root, AUTOGRADER_GRADE_TIMEOUT="1")
    assert timed_out["score"] == 0 and "longer than 1 s" in timed_out["output"]
    assert len(timed_out["tests"]) == sum(len(step.tests) for step in STEPS)
    crashed = run_autograder(root, AUTOGRADER_PYTHON="/bin/false")
    assert crashed["score"] == 0 and "failed before grading" in crashed["output"]


def test_the_reference_a_grade_reads_is_kept_like_the_grader(tmp_path: Path) -> None:
    # Step 15's suite is graded on the course's reference service: a submission that
    # weakened it there would raise the grade of every student graded after it.
    from autograder import integrity

    reference = Path("solutions") / LAST.slug
    shutil.copytree(ROOT / reference, tmp_path / reference)
    (tmp_path / "course.toml").write_text("", encoding="utf-8")
    kept = integrity.snapshot(tmp_path)
    app = tmp_path / reference / "app.py"
    original = app.read_bytes()
    app.write_text("app = None\n", encoding="utf-8")
    (tmp_path / reference / "sitecustomize.py").write_text("", encoding="utf-8")
    changed = kept.changes()
    assert changed == sorted([app, tmp_path / reference / "sitecustomize.py"])
    kept.restore(changed)
    assert app.read_bytes() == original and not kept.changes()


# --- A class at once ------------------------------------------------------------------


def test_grade_class_a_broken_or_hanging_submission_costs_only_itself(tmp_path: Path) -> None:
    from autograder import integrity

    submissions = tmp_path / "class"
    for student in ("alice", "bob", "loops", "typo", "tamper"):
        for step in (FIRST, SECOND):
            shutil.copytree(ROOT / "solutions" / step.slug, submissions / student / step.slug)
    loops = submissions / "loops" / FIRST.slug / "app.py"
    loops.write_text(loops.read_text(encoding="utf-8") + "\nwhile True:\n    pass\n")
    typo = submissions / "typo" / SECOND.slug / "app.py"
    typo.write_text(typo.read_text(encoding="utf-8") + "\ndef broken(:\n")
    # Writes into the grader it runs under: a graded test of step 02 that always passes.
    tamper = submissions / "tamper" / FIRST.slug / "app.py"
    tamper.write_text(
        "import pathlib, autograder\n"
        "_tests = pathlib.Path(autograder.__file__).parent.parent / 'exercises'\n"
        f"(_tests / {SECOND.slug!r} / 'test_app.py').write_text('')\n"
        + tamper.read_text(encoding="utf-8")
    )
    checkout = integrity.snapshot()
    out = tmp_path / "grades"
    completed = autograder(
        "grade-class", str(submissions), "--out", str(out), "--steps", FIRST.id, SECOND.id,
        "--import-timeout", "3",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "[5/5]" in completed.stdout  # the progress line
    changed = [path for path in checkout.changes() if ".model_cache" not in path.parts]
    assert not changed, f"a submission changed the course's checkout: {changed}"
    with (out / "grades.csv").open(encoding="utf-8") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    full = FIRST.max_points + SECOND.max_points
    expected = {
        "alice": (FIRST.max_points, SECOND.max_points),
        "bob": (FIRST.max_points, SECOND.max_points),
        "loops": (0, SECOND.max_points),
        "typo": (FIRST.max_points, 0),
        "tamper": (0, 0),  # its run changed the grader's files: no score
    }
    for student, (first, second) in expected.items():
        row = rows[student]
        assert (int(row[f"step {FIRST.id}"]), int(row[f"step {SECOND.id}"])) == (first, second)
        assert int(row["total"]) == first + second
        graded = json.loads((out / f"{student}.json").read_text(encoding="utf-8"))
        assert graded["score"] == first + second and graded["max_score"] == full
    # Nothing of the class is left running (checked where /proc lists the processes).
    left = [
        pid
        for pid in (os.listdir("/proc") if Path("/proc").is_dir() else [])
        if pid.isdigit() and str(submissions).encode() in _cmdline(pid)
    ]
    assert not left


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_grade_class_stops_a_student_past_the_time_limit_and_scores_it_zero(
    tmp_path: Path,
) -> None:
    submissions = tmp_path / "class"
    shutil.copytree(ROOT / "solutions" / FIRST.slug, submissions / "slow" / FIRST.slug)
    out = tmp_path / "grades"
    completed = autograder(
        "grade-class", str(submissions), "--out", str(out), "--steps", FIRST.id,
        "--student-timeout", "0.5",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    graded = json.loads((out / "slow.json").read_text(encoding="utf-8"))
    assert graded["score"] == 0 and "longer than" in graded["output"]
    assert graded["max_score"] == FIRST.max_points
    assert "slow,0,0" in (out / "grades.csv").read_text(encoding="utf-8")


def test_ending_a_student_ends_every_process_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    from autograder.platforms import grade_class
    from autograder.platforms.grade_class import _descendants, _end

    monkeypatch.setattr(grade_class, "GRACE", 0.5)  # it ignores Ctrl-C: no need to wait 10 s

    if not Path("/proc").is_dir():
        pytest.skip("lists processes through /proc (Linux)")
    # A grader stand-in whose child starts a grandchild in a session of its own, and
    # which ignores Ctrl-C: all three must end.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        for _ in range(3000):  # up to 30 s for two interpreters to start on a busy machine
            tree = _descendants(process.pid)
            if tree:
                break
            time.sleep(0.01)  # waiting for the stand-in to start its child, not timing it
        assert tree, "the stand-in started no child"
        _end(process)
        assert process.poll() is not None
        # SIGKILL is delivered at once but a process takes a moment to die on a busy
        # machine: wait for that (up to 10 s), it is not what is being judged.
        for _ in range(1000):
            left = [pid for pid in tree if _alive(pid)]
            if not left:
                break
            time.sleep(0.01)
        assert not left, f"processes still running after the student was ended: {left}"
    finally:
        process.kill()


def _alive(pid: int | str) -> bool:
    return Path(f"/proc/{pid}").exists() and not _zombie(pid)


def _zombie(pid: int | str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
