"""Grade a class: every `SUBMISSIONS/<student>/` (laid out like exercises/), in parallel.

Each student is one `python -m autograder grade --source-root` process of its own (a
warm process for that student only, nothing shared), at most one per CPU at once, and
under a wall-clock limit: a submission that hangs or crashes costs only its own grade.
Each runs from a private copy of the grader (and of the built models), so a submission
that writes into the grader changes only its own copy, scores zero for it (see
autograder.integrity) and cannot touch another student's run, before or beside it.
Writes `OUT/<student>.json` (Gradescope's format) and `OUT/grades.csv`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from autograder.catalog import GRADING_REFERENCES, ROOT, Step

GRACE = 10.0  # seconds a stopped grader gets to end its children itself


def grade_class(
    submissions: Path,
    out: Path,
    steps: list[Step],
    *,
    jobs: int | None = None,
    student_timeout: float = 1800,
    test_timeout: float | None = None,
    import_timeout: float | None = None,
) -> int:
    students = sorted(
        path for path in submissions.iterdir() if path.is_dir() and not path.name.startswith(".")
    )
    if not students:
        print(f"No student folders in {submissions}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    # Each student's grading runs its steps in parallel already; one student per CPU
    # keeps a class from crowding the machine (and the warm processes from piling up).
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(students)))
    if any(step.id >= "03" for step in steps):
        from coursekit.models import build_missing

        build_missing()  # once, here: each student's copy of the grader gets a copy of them
    lock = threading.Lock()
    done: list[str] = []
    started = time.monotonic()

    def one(student: Path) -> dict[str, object]:
        result = _grade_student(student, out, steps, student_timeout, test_timeout, import_timeout)
        with lock:
            done.append(student.name)
            elapsed = time.monotonic() - started
            print(
                f"[{len(done)}/{len(students)}] {student.name}: "
                f"{result['score']}/{result['max_score']} ({elapsed:.0f} s)",
                flush=True,
            )
        return result

    print(f"Grading {len(students)} submissions, {jobs} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, students))
    _write_csv(out / "grades.csv", steps, students, results)
    elapsed = time.monotonic() - started
    print(
        f"Graded {len(students)} submissions in {elapsed:.1f} s "
        f"({len(students) / elapsed * 60:.1f} per minute); wrote {out / 'grades.csv'}",
        flush=True,
    )
    return 0


def _grade_student(
    student: Path,
    out: Path,
    steps: list[Step],
    limit: float,
    test_timeout: float | None,
    import_timeout: float | None,
) -> dict[str, object]:
    target = out / f"{student.name}.json"
    target.unlink(missing_ok=True)
    command = [sys.executable, "-m", "autograder", "grade", *(step.id for step in steps)]
    command += ["--source-root", str(student.resolve()), "--json", str(target.resolve())]
    if test_timeout:
        command += ["--test-timeout", str(test_timeout)]
    if import_timeout:
        command += ["--import-timeout", str(import_timeout)]
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory(prefix="grader-") as copy:
        grader = _private_grader(Path(copy))
        env = {
            **os.environ,
            "AUTOGRADER_SHARED_WARM": "0",
            # `python -m autograder` run in the copy imports the copy's code, not ROOT's.
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(grader), os.environ.get("PYTHONPATH")])
            ),
            "COURSEKIT_MODEL_CACHE": str(grader / "model_cache"),
        }
        process = subprocess.Popen(
            command,
            cwd=grader,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=os.name != "nt",  # its whole tree can be ended at once
        )
        reason = ""
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            reason = f"grading took longer than {limit:.0f} s and was stopped"
        finally:
            _end(process)
        if not reason and not target.is_file():
            log.seek(0)
            tail = log.read().decode("utf-8", "replace").strip().splitlines()[-1:]
            reason = "the grader wrote no results" + (f": {tail[0]}" if tail else "")
    if reason:
        result = _zero(steps, f"{student.name}: {reason}.")
        target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return result
    return json.loads(target.read_text(encoding="utf-8"))


# What a grading run reads of the course; lessons, the website and all but step 15's
# solution (its suite is graded on it) it does not.
GRADER_PARTS = (
    "autograder",
    "coursekit",
    "exercises",
    "course.toml",
    "pyproject.toml",
    *GRADING_REFERENCES,
)


def _private_grader(folder: Path) -> Path:
    """A copy of the grader in `folder` (with the built models), for one student's run."""
    from coursekit.models import cache_directory

    skip = shutil.ignore_patterns("__pycache__", ".model_cache", "*.lock", "*.sqlite3")
    for name in GRADER_PARTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=skip)
        elif source.is_file():
            shutil.copy2(source, folder / name)
    built = cache_directory()
    if built.is_dir():
        shutil.copytree(built, folder / "model_cache" / built.name, ignore=skip)
    return folder


def _zero(steps: list[Step], reason: str) -> dict[str, object]:
    tests = [
        {
            "name": f"{step.id} {step.title}: {test.name}",
            "number": f"{step.id}.{index}",
            "score": 0,
            "max_score": test.points,
            "status": "failed",
            "output": reason,
        }
        for step in steps
        for index, test in enumerate(step.tests, start=1)
    ]
    max_score = sum(step.max_points for step in steps)
    return {"score": 0, "max_score": max_score, "output": reason, "tests": tests}


def _end(process: subprocess.Popen[bytes]) -> None:
    """End the student's grader and everything it started.

    First as Ctrl-C would (it then ends the children it started in sessions of their
    own), then by force: its process group, and every process descended from it,
    listed before the grader could exit and leave them to init.
    """
    tree = _descendants(process.pid)
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.send_signal(signal.SIGINT if os.name != "nt" else signal.CTRL_BREAK_EVENT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=GRACE)
    if os.name == "nt":
        process.kill()
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        process.wait(timeout=5)


def _descendants(root: int) -> list[int]:
    """The processes descended from `root`, where /proc lists them (Linux); else none."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (2nd field) may hold spaces: the parent id follows its ")".
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _write_csv(
    path: Path, steps: list[Step], students: list[Path], results: list[dict[str, object]]
) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", *(f"step {step.id}" for step in steps), "total"])
        for student, result in zip(students, results, strict=True):
            per_step = dict.fromkeys((step.id for step in steps), 0)
            for test in result.get("tests", []):  # type: ignore[union-attr]
                step_id = str(test["name"]).split(" ", 1)[0]
                if step_id in per_step:
                    per_step[step_id] += int(test["score"])
            writer.writerow([student.name, *per_step.values(), sum(per_step.values())])
