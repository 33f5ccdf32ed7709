"""Start the grader's child processes, and end them with everything they started.

Each step is graded by a child running `pytest exercises/NN_slug` (see
`autograder.child`). Where the OS can fork (Linux, macOS), the child is forked from a
warm process (`autograder.zygote`) that has already imported the heavy libraries and
parsed the course's models (`autograder.warm`), so it starts in milliseconds rather
than seconds. Elsewhere (Windows), or if the warm process cannot start, the child is a
fresh `python -m pytest`: slower to start, the same in every other way. Either way the
child is a process of its own, in a session of its own, killed with its whole tree on
a hang; a learner's code never runs in the grader's process.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from autograder.catalog import ROOT

# Set AUTOGRADER_SPAWN=1 to start every child as a fresh interpreter, as on Windows.
FORK = os.name != "nt" and not os.environ.get("AUTOGRADER_SPAWN")


class Child(Protocol):
    """A running child: poll it, and kill it with all it started."""

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...


def start_child(pytest_args: list[str], env: Mapping[str, str], log: Path) -> Child:
    """Run `pytest PYTEST_ARGS` in the repository root with exactly `env`; output to `log`."""
    zygote = _warm_process() if FORK else None
    if zygote is not None:
        with contextlib.suppress(Exception):  # the warm process died: start afresh
            return _ForkedChild(zygote, zygote.fork(pytest_args, env, log))
    return _SpawnedChild(pytest_args, env, log)


class _SpawnedChild:
    def __init__(self, pytest_args: list[str], env: Mapping[str, str], log: Path) -> None:
        with open(log, "wb") as output:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "pytest", *pytest_args],
                cwd=ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=os.name != "nt",
            )

    def poll(self) -> int | None:
        return self._process.poll()

    def kill(self) -> None:
        if os.name != "nt":
            with contextlib.suppress(ProcessLookupError):  # it may have ended on its own
                os.killpg(self._process.pid, signal.SIGKILL)
        else:
            # taskkill ends the whole tree; Popen.kill() would end only the child.
            subprocess.run(
                ["taskkill", "/F", "/T", "/PID", str(self._process.pid)],
                capture_output=True,
                check=False,
            )
            self._process.kill()
        self._process.wait()


class _Zygote:
    """The parent's side of `autograder.zygote`: ask it to fork, learn when children end."""

    def __init__(self, modules: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autograder.zygote", *modules],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # a warm process that fails is replaced, not read
            start_new_session=True,  # Ctrl-C in the terminal reaches the grader only
        )
        self._lock = threading.Lock()  # one request (and its answer) at a time
        self._started: queue.Queue[int] = queue.Queue()
        self._exited: dict[int, int] = {}
        self._changed = threading.Condition()
        readable, _, _ = select.select([self.process.stdout], [], [], STARTUP_LIMIT)
        ready = json.loads(self.process.stdout.readline() or "{}") if readable else {}  # type: ignore[union-attr]
        if "ready" not in ready:
            self.process.kill()
            raise RuntimeError("the warm process did not start")
        threading.Thread(target=self._read, name="zygote-reader", daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            message = json.loads(line)
            if "started" in message:
                self._started.put(message["started"])
            elif "exited" in message:
                with self._changed:
                    self._exited[message["exited"]] = message["code"]
                    self._changed.notify_all()
        with self._changed:  # the zygote itself ended: nothing it forked will report
            self._changed.notify_all()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self, pytest_args: list[str], env: Mapping[str, str], log: Path) -> int:
        request = {"args": pytest_args, "env": dict(env), "log": str(log)}
        with self._lock:
            self.process.stdin.write((json.dumps(request) + "\n").encode())  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
            return self._started.get(timeout=STARTUP_LIMIT)

    def exit_code(self, pid: int) -> int | None:
        with self._changed:
            if pid in self._exited:
                return self._exited[pid]
        return None if self.alive else -int(signal.SIGKILL)

    def wait(self, pid: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exited or not self.alive, STARTUP_LIMIT)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=STARTUP_LIMIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


STARTUP_LIMIT = 90.0  # seconds for the warm process to import, or to fork a child
_zygote_lock = threading.Lock()
_zygote: _Zygote | None = None
_zygote_failed = False
_preload: list[str] = []  # empty: autograder.warm's full list


def warm_with(modules: Iterable[str]) -> None:
    """Name the modules the warm process imports, before it starts (else: all of them).

    A run that grades one light step should not wait for scikit-learn to import.
    """
    with _zygote_lock:
        if _zygote is None:
            _preload[:] = sorted(set(modules))


def imports_of(files: Iterable[Path], local: Iterable[str] = ()) -> set[str]:
    """The modules that `files` import at their top level, but for the `local` ones.

    Read with `ast`, never imported: these are the course's files (tests, solutions).
    """
    local = set(local)
    found: set[str] = set()
    for file in files:
        with contextlib.suppress(OSError, SyntaxError, ValueError):
            tree = ast.parse(file.read_text(encoding="utf-8"))
            for node in tree.body:
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module)
    return {name for name in found if name.partition(".")[0] not in local}


def _warm_process() -> _Zygote | None:
    """The running warm process, started on first use; None if it cannot start."""
    global _zygote, _zygote_failed
    with _zygote_lock:
        if _zygote is not None and _zygote.alive:
            return _zygote
        if _zygote_failed:
            return None
        try:
            _zygote = _Zygote(_preload)
        except Exception:
            _zygote_failed = True  # grade all the same, each child started fresh
            return None
        # Stopped and waited for at exit, the warm process (and through it every child)
        # counts in this process's resource usage, so a benchmark sees all the CPU.
        atexit.register(_zygote.stop)
        return _zygote


class _ForkedChild:
    def __init__(self, zygote: _Zygote, pid: int) -> None:
        self._zygote = zygote
        self._pid = pid

    def poll(self) -> int | None:
        return self._zygote.exit_code(self._pid)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, signal.SIGKILL)
        self._zygote.wait(self._pid)
