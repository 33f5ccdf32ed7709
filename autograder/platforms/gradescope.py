"""Gradescope: build the autograder zip, and run it (`run_autograder` calls `run()`).

The zip holds the course (without the lessons, the course's own checks or any solution
but step 15's, on which the learner's suite is graded),
`setup.sh`, which installs the pinned grade lock into /autograder/venv and creates an
unprivileged user, and `run_autograder`. A run copies only the learner's modules of
the submission (never its tests, conftest or given modules) into a fresh folder laid
out like `exercises/`, grades it with `--source-root` from a fresh copy of the course,
as that user when it runs as root, and always writes results.json: on a crash or a
timeout too (every test at zero, with the reason).

Paths come from the environment so a test can run it in a temporary root:
`AUTOGRADER_ROOT` (/autograder), `AUTOGRADER_PYTHON`, `AUTOGRADER_GRADE_TIMEOUT` (s),
`AUTOGRADER_GRADE_USER` (the unprivileged user, `autograder-student`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from autograder.catalog import GRADING_REFERENCES, Step
from autograder.platforms.grade_class import _descendants

# What the zip leaves out of the course: what a grade never needs, and the solutions
# (but GRADING_REFERENCES, which a grade needs).
LEFT_OUT = ("solutions/", "lessons/", "docs/", "tests/", "benchmarks/", ".github/", "site/")
KEPT = tuple(f"{folder}/" for folder in GRADING_REFERENCES)
USER = "autograder-student"

SETUP_SH = f"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
cd /autograder/source
PYTHON=python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    # The course needs Python 3.11+; Gradescope's Ubuntu images ship it as python3.11.
    apt-get update && apt-get install -y python3.11 python3.11-venv
    PYTHON=python3.11
fi
"$PYTHON" -m venv /autograder/venv
/autograder/venv/bin/python -m pip install --upgrade pip
/autograder/venv/bin/python -m pip install -r requirements/grade.txt
# The submission's code runs as this user: it cannot write the course or the results.
id -u {USER} >/dev/null 2>&1 || useradd --system --create-home {USER}
chmod -R a+rX /autograder/source /autograder/venv
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this, as root, for each submission. It always writes results.json.
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}"
RESULTS="$ROOT/results/results.json"
mkdir -p "$ROOT/results"
rm -f "$RESULTS"
cd "$ROOT/source" && PYTHONPATH="$ROOT/source" "$PYTHON" -m autograder.platforms.gradescope
if [ ! -s "$RESULTS" ]; then
    # The runner itself died before writing: still a results.json, and a reason.
    REASON="The autograder failed before grading. Please resubmit; if it persists, tell us."
    printf '{"score": 0, "visibility": "visible", "tests": [], "output": "%s"}\\n' \\
        "$REASON" > "$RESULTS"
fi
exit 0
"""


def course_files(root: Path) -> list[str]:
    """The course files the zip ships: tracked by git (else all), minus LEFT_OUT but KEPT."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode("utf-8")
        names = [name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".autograder", "build"}
        names = [
            path.relative_to(root).as_posix()
            for path in root.rglob("*")
            if path.is_file() and not skip & set(path.relative_to(root).parts)
        ]
    return sorted(
        name
        for name in names
        if (name.startswith(KEPT) or not name.startswith(LEFT_OUT))
        and (root / name).is_file()
        and not name.endswith(".zip")
    )


def build_zip(out: Path, root: Path | None = None) -> Path:
    from autograder.catalog import ROOT

    root = root or ROOT
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in course_files(root):
            archive.write(root / name, name)
        for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100755 << 16  # executable, as Gradescope requires
            archive.writestr(info, text)
    return out


def _learner_folder(submission: Path, slug: str) -> Path | None:
    """Where the submission keeps a step: `exercises/NN_slug/`, `NN_slug/`, one level down."""
    for candidate in (submission / "exercises" / slug, submission / slug):
        if candidate.is_dir():
            return candidate
    for found in sorted(submission.glob(f"*/exercises/{slug}")) + sorted(
        submission.glob(f"*/{slug}")
    ):
        if found.is_dir():
            return found
    return None


def assemble(submission: Path, course: Path, target: Path) -> list[str]:
    """Lay out `target` like exercises/: the submission's learner modules and other
    modules of its own, the course's given ones; a learner module the submission lacks
    stays the stub. Notes for the log."""
    from autograder.catalog import load_catalog

    notes = []
    for step in load_catalog(course / "course.toml").steps:
        shipped = course / "exercises" / step.slug
        folder = target / step.slug
        shutil.copytree(shipped, folder, ignore=shutil.ignore_patterns("test_*.py", "__pycache__"))
        mine = _learner_folder(submission, step.slug)
        for module in step.modules:
            if module in step.given:
                continue  # the course's copy, whatever the submission holds
            source = mine / f"{module}.py" if mine else None
            if source is not None and source.is_file():
                shutil.copyfile(source, folder / f"{module}.py")
            else:
                notes.append(f"{step.id}: no {module}.py in the submission, graded as the stub")
        for source in _own_modules(step, mine):
            shutil.copyfile(source, folder / source.name)
    return notes


def _own_modules(step: Step, mine: Path | None) -> list[Path]:
    """The submission's other modules of a step: those the step suggests (step 15's
    `chat.py`, ...) and any it added. Never a given module, a test file or a conftest.py:
    the course's files grade it."""
    if mine is None:
        return []
    return [
        path
        for path in sorted(mine.glob("*.py"))
        if path.stem not in step.modules
        and path.name != "conftest.py"
        and not path.stem.startswith("test_")
        and not path.stem.endswith("_test")
        and path.is_file()
    ]


def _zero_results(reason: str) -> dict[str, object]:
    from autograder.catalog import load_catalog
    from autograder.records import Record
    from autograder.reports import gradescope_results

    records = [
        Record(
            step=step.id,
            step_title=step.title,
            test=test.name,
            points=test.points,
            score=0,
            outcome="not_run",
            message=reason,
            hint=test.hint,
            section=test.section,
        )
        for step in load_catalog().steps
        for test in step.tests
    ]
    results = gradescope_results(records)
    results["output"] = reason
    return results


def _checked(raw: dict[str, object]) -> dict[str, object]:
    """The grade as the course's points allow: each test's score within its course.toml
    points, the total their sum (a results file is never trusted for its arithmetic)."""
    tests = raw.get("tests")
    if not isinstance(tests, list):
        raise ValueError("results.json has no tests[]")
    total = 0
    for test in tests:
        score, most = test.get("score"), test.get("max_score")
        if not isinstance(score, int) or not isinstance(most, int) or not 0 <= score <= most:
            raise ValueError(f"a test's score is out of range: {test.get('name')!r}")
        total += score
    return {**raw, "score": total}


def _user() -> tuple[dict[str, int], str]:
    """Popen arguments that drop to the unprivileged user, and what was done, in words."""
    name = os.environ.get("AUTOGRADER_GRADE_USER", USER)
    if os.name != "posix" or os.geteuid() != 0:
        return {}, "Graded as the current user (not root, so it cannot switch users)."
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return {}, f"Graded as root: there is no user {name!r} (setup.sh creates it)."
    ids = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    return ids, f"Graded as the unprivileged user {name!r}."  # type: ignore[return-value]


def run() -> int:
    _become_subreaper()
    root = Path(os.environ.get("AUTOGRADER_ROOT", "/autograder"))
    results_path = root / "results" / "results.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    limit = float(os.environ.get("AUTOGRADER_GRADE_TIMEOUT", "1800"))
    try:
        results = _grade(root, limit)
    except Exception as error:  # whatever happened: a results.json
        results = _zero_results(f"The autograder failed ({type(error).__name__}: {error}).")
    results_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"Score: {results.get('score')}/{results.get('max_score')}")
    return 0


def _grade(root: Path, limit: float) -> dict[str, object]:
    scratch = Path(tempfile.mkdtemp(prefix="gradescope-"))
    try:
        return _grade_in(root, scratch, limit)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _grade_in(root: Path, scratch: Path, limit: float) -> dict[str, object]:
    source = root / "source"
    course, submission, out = scratch / "course", scratch / "submission", scratch / "out"
    home, cache = scratch / "home", scratch / "model_cache"
    # A fresh copy of the course for every run: nothing a run did survives it.
    shutil.copytree(source, course, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    notes = assemble(root / "submission", course, submission)
    ids, who = _user()
    for folder in (out, home, cache):
        folder.mkdir()
        if ids:
            os.chown(folder, ids["user"], ids["group"])
    os.chmod(scratch, 0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": str(home),
        "PYTHONPATH": str(course),
        "COURSEKIT_MODEL_CACHE": str(cache),
        "AUTOGRADER_SHARED_WARM": "0",
    }
    python = os.environ.get("AUTOGRADER_PYTHON", sys.executable)
    command = [python, "-m", "autograder", "grade", "--source-root", str(submission)]
    command += ["--json", str(out / "results.json")]
    process = subprocess.Popen(
        command,
        cwd=course,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its whole tree can be ended at once
        **ids,  # type: ignore[arg-type]
    )
    try:
        log, _ = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _end(process)
        return _zero_results(f"Grading took longer than {limit:.0f} s and was stopped. {who}")
    finally:
        _end(process)  # anything the submission left running goes with it
    sys.stdout.write(log.decode("utf-8", "replace"))
    try:
        raw = json.loads((out / "results.json").read_text(encoding="utf-8"))
        results = _checked(raw)
    except (OSError, ValueError) as error:
        return _zero_results(f"Grading wrote no usable results ({error}). {who}")
    results["output"] = "\n".join([who, *notes])
    return results


def _end(process: subprocess.Popen[bytes]) -> None:
    """End the grading and every process it left: its group, and on Linux (where this
    runner is a subreaper, so orphans become its children) every descendant."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        process.wait(timeout=5)


def _become_subreaper() -> None:
    """Linux: processes the grading leaves behind become this runner's children."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


if __name__ == "__main__":
    sys.exit(run())
