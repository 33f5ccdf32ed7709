"""One entry point for the course, the same on Linux, macOS and Windows.

    python course.py grade [pytest options]   grade your exercises (the score table)
    python course.py watch [01]               grade the step you edit at every save
    python course.py test                     the course's own checks
    python course.py lab                      JupyterLab on the lessons
    python course.py serve 01 [--mine]        a step's solution (or your exercise) under uvicorn
                                              (more options go to uvicorn: --port 8001)
    python course.py docs                     the course website on http://127.0.0.1:8000
    python course.py setup [grade]            only install (all, or what grading needs)

Each command first makes sure `.venv` exists and holds the pinned packages it needs
(requirements/grade.txt for grading, requirements/dev.txt for everything else), so a
fresh clone needs nothing but Python 3.11+ and git. Only the standard library is used
here, because this file runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
REQUIREMENTS = {
    "grade": ROOT / "requirements" / "grade.txt",
    "dev": ROOT / "requirements" / "dev.txt",
}
USAGE = __doc__ or ""


def venv_python() -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def ensure_venv(group: str) -> Path:
    """Create `.venv` and install the pinned `group` there, unless that is already done.

    A stamp file records the hash of the requirements file it installed, so a second
    run starts at once and a changed lock file reinstalls by itself.
    """
    if sys.version_info < (3, 11):  # noqa: UP036 (this file runs on any Python, to say so)
        sys.exit(f"This course needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    python = venv_python()
    if not python.exists():
        print(f"Creating the virtual environment in {VENV.name}/ ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # The dev lock pins everything the grade lock pins, to the same versions (a course
    # check holds them equal), so a current dev install serves grading too.
    covering = [group] if group == "dev" else [group, "dev"]
    if any(_stamp(g).exists() and _stamp(g).read_text() == _digest(g) for g in covering):
        return python
    print(f"Installing the pinned packages for '{group}' (once) ...", flush=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS[group])], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    _stamp(group).write_text(_digest(group))
    return python


def _stamp(group: str) -> Path:
    return VENV / f".installed-{group}"


def _digest(group: str) -> str:
    return hashlib.sha256(REQUIREMENTS[group].read_bytes()).hexdigest()


def run(python: Path, *args: str) -> int:
    """Run `python args...` in the course folder and return its exit code.

    A signal that stops this wrapper (an IDE's stop button, `kill`, a closed terminal) is
    passed on to the command, and the wrapper waits for it: otherwise a uvicorn or
    JupyterLab started here would keep running, holding its port, after the wrapper died.
    """
    child = subprocess.Popen([str(python), *args], cwd=ROOT)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    stoppers = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {signum: signal.signal(signum, forward) for signum in stoppers}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                # Ctrl-C reached the command too (same terminal): let it finish cleanly.
                continue
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def step_folder(kind: str, step: str) -> Path:
    matches = sorted((ROOT / kind).glob(f"{step.zfill(2)}_*"))
    if not matches:
        sys.exit(f"No step {step!r} in {kind}/ (try one of: {', '.join(_step_ids())}).")
    return matches[0]


def _step_ids() -> list[str]:
    return sorted(p.name[:2] for p in (ROOT / "solutions").glob("[0-9][0-9]_*"))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "grade":
        python = ensure_venv("grade")
        # `grade exercises/01_first_endpoint` grades that step; bare `grade`, them all.
        named = any(Path(arg.split("::")[0]).exists() for arg in rest if not arg.startswith("-"))
        code = run(python, "-m", "pytest", *([] if named else ["exercises/"]), *rest)
        # Failing tests are the normal state of an unfinished course: only a grader
        # that could not run at all is an error here.
        return 0 if code in (0, 1) else code
    if command == "setup":
        # What every other command does first, alone: for a container or a CI image.
        group = rest[0] if rest else "dev"
        if group not in REQUIREMENTS:
            sys.exit(f"setup installs one of: {', '.join(REQUIREMENTS)}.")
        print(f"Ready: {ensure_venv(group)}", flush=True)
        return 0
    if command == "watch":
        return run(ensure_venv("grade"), "-m", "autograder", "watch", *rest)
    if command == "test":
        return run(ensure_venv("dev"), "-m", "pytest", "tests/", *rest)
    if command == "lab":
        return run(ensure_venv("dev"), "-m", "jupyter", "lab", "lessons/", *rest)
    if command == "docs":
        return run(ensure_venv("dev"), "-m", "mkdocs", "serve", *rest)
    if command == "serve":
        if not rest:
            sys.exit("Which step? For example: python course.py serve 01")
        kind = "exercises" if "--mine" in rest else "solutions"
        folder = step_folder(kind, rest[0])
        # Anything else is uvicorn's: `serve 01 --port 8001`.
        options = [arg for arg in rest[1:] if arg != "--mine"]
        python = ensure_venv("grade")
        return run(
            python,
            "-m",
            "uvicorn",
            "app:app",
            "--app-dir",
            str(folder),
            "--reload-dir",
            str(folder),
            "--reload",
            *options,
        )
    print(f"Unknown command {command!r}.\n\n{USAGE}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
