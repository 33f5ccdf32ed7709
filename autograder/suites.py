"""Run a learner's test suite against several versions of a service (step 12).

`python -m autograder.suites JOB.json` reads a list of runs, each a folder holding the
learner's `test_service.py` beside one version of `service.py`, and runs pytest in each,
writing what that pytest saw to the run's report file (`suite_report`, the grader's own
plugin). The first run (the correct service) goes alone: when the suite fails there, the
others would prove nothing and are not run. The rest go `workers` at a time.

Where the OS can fork, this process imports pytest, FastAPI, hypothesis and the rest once
and forks a process per run, which starts in milliseconds instead of the second a new
interpreter takes; on Windows each run is a new interpreter. Started by a grading child
through `autograder.processes.run_module`, this process is itself forked from the warm
process, with those imports done already. Either way every run is a
process of its own, ended when it runs out of time. The runs stay in this process's
group, so whatever a suite leaves behind ends with the step's run (the grader ends that
group after every run).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

FORK = hasattr(os, "fork") and not os.environ.get("AUTOGRADER_SPAWN")
PYTEST_ARGS = [
    "test_service.py",
    "-q",
    "-rfE",
    "--tb=line",
    "-p",
    "suite_report",
    "-p",
    "anyio",
    "-p",
    "no:cacheprovider",
]
# What a suite of step 12 may use; imported here once, before any fork.
WARM = (
    "pytest",
    "_pytest.assertion.rewrite",
    "anyio",
    "anyio.pytest_plugin",
    "anyio._backends._asyncio",
    "fastapi",
    "fastapi.testclient",
    "fastapi.sse",
    "starlette.testclient",
    "httpx",
    "httpx2",
    "pydantic",
    "pydantic_settings",
    "hypothesis",
    "hypothesis.strategies",
    "sqlite3",
    "coursekit.models",
    "coursekit.docs",
    # What the capstone's suites (step 15) use besides.
    "celery",
    "redis",
    "redis.asyncio",
    "limits.aio.storage",
    "limits.aio.strategies",
    "coursekit.llm",
)


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    runs: list[dict[str, str]] = job["runs"]
    timeout, workers = float(job["timeout"]), int(job["workers"])
    if FORK:
        for name in WARM:
            with contextlib.suppress(Exception):
                __import__(name)
        # Out of the collector's sight: each run's collections then skip what it
        # inherits, and the pages they share stay shared (as in autograder.zygote).
        gc.freeze()
    first, rest = runs[0], runs[1:]
    _run_all([first], timeout, 1)
    if _exit_code(first) == 0:
        _run_all(rest, timeout, workers)
    return 0


def _exit_code(run: dict[str, str]) -> int | None:
    path = Path(run["result"])
    return json.loads(path.read_text(encoding="utf-8"))["exit_code"] if path.is_file() else None


def _run_all(runs: list[dict[str, str]], timeout: float, workers: int) -> None:
    """Run each, `workers` at a time, from this (single-threaded) process."""
    waiting = list(runs)
    running: dict[int, tuple[dict[str, str], float, subprocess.Popen[bytes] | None]] = {}
    while waiting or running:
        while waiting and len(running) < workers:
            run = waiting.pop(0)
            pid, process = _start(run)
            running[pid] = (run, time.monotonic(), process)
        for pid, (run, started, process) in list(running.items()):
            code = _poll(pid, process)
            timed_out = code is None and time.monotonic() - started > timeout
            if timed_out:
                _kill(pid, process)
            if code is not None or timed_out:
                del running[pid]
                result = {"exit_code": code, "timed_out": timed_out}
                Path(run["result"]).write_text(json.dumps(result), encoding="utf-8")
        time.sleep(0.01)


def _start(run: dict[str, str]) -> tuple[int, subprocess.Popen[bytes] | None]:
    env = {**os.environ, **json.loads(run["env"])}
    if not FORK:
        with open(run["log"], "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "pytest", *PYTEST_ARGS],
                cwd=run["folder"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return process.pid, process
    pid = os.fork()
    if pid == 0:
        _run_in_this_process(run, env)  # never returns
    return pid, None


def _run_in_this_process(run: dict[str, str], env: dict[str, str]) -> None:
    """In the forked process: become `pytest test_service.py` in the run's folder."""
    code = 3
    try:
        log = os.open(run["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(env)
        os.chdir(run["folder"])
        sys.path.insert(0, run["folder"])
        sys.path.insert(0, run["plugins"])
        import pytest

        code = int(pytest.main(list(PYTEST_ARGS)))
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _poll(pid: int, process: subprocess.Popen[bytes] | None) -> int | None:
    if process is not None:
        return process.poll()
    done, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


def _kill(pid: int, process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        if os.name == "nt":  # taskkill ends the whole tree; kill() would end only the run
            subprocess.run(
                ["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False
            )
        process.kill()
        process.wait()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
