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
import hashlib
import itertools
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from autograder import sandbox
from autograder.catalog import ROOT

# AUTOGRADER_SPAWN=1: start every child as a fresh interpreter, as on Windows.
FORK = os.name != "nt" and not os.environ.get("AUTOGRADER_SPAWN")
# AUTOGRADER_SHARED_WARM=0: a warm process for this run only, ended with it (the
# instructor's mode uses one too: a class's submissions share nothing).
SHARED = os.environ.get("AUTOGRADER_SHARED_WARM", "1") != "0"
SANDBOXED = False  # see sandbox_warm_process


class Child(Protocol):
    """A running child: poll it, and kill it with all it started."""

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...


def start_child(
    pytest_args: list[str], env: Mapping[str, str], log: Path, needs: Iterable[str] = ()
) -> Child:
    """Run `pytest PYTEST_ARGS` in the repository root with exactly `env`; output to `log`.

    `needs` names the modules the child imports: a warm process imports them first.
    """
    zygote = _warm_process() if FORK else None
    if zygote is not None:
        # So that the child can start processes of its own from it (`run_module`).
        forked_env = {**env, WARM_SOCKET_ENV: zygote.path}
        with contextlib.suppress(Exception):  # the warm process died: start afresh
            return _ForkedChild(zygote, zygote.fork(pytest_args, forked_env, log, needs))
    return _SpawnedChild(pytest_args, env, log)


WARM_SOCKET_ENV = "AUTOGRADER_WARM_SOCKET"


def run_module(
    module: str, args: list[str], env: Mapping[str, str], log: Path, needs: Iterable[str] = ()
) -> int:
    """Run `python -m MODULE ARGS` in the repository root with exactly `env`, to its end.

    From a grading child that the warm process forked, the module runs in a process
    forked from that warm process too, with `needs` imported already: a new interpreter
    would spend about a second importing them again. Elsewhere it is a new interpreter.
    Output goes to `log`; the exit code is returned (negative: killed by that signal).
    The process keeps this one's resource limits either way.
    """
    child = start_module(module, args, env, log, needs)
    try:
        return child.wait()
    finally:
        child.kill()


def start_module(
    module: str, args: list[str], env: Mapping[str, str], log: Path, needs: Iterable[str] = ()
) -> ModuleChild:
    """Start what `run_module` runs, and return at once: poll it, wait for it, kill it.

    Forked from the warm process, it runs in a session of its own, which killing it ends
    whole. A new interpreter stays in this process's session instead, so what it started
    ends when this process's tree is ended (as the grader ends every child's).
    """
    path = os.environ.get(WARM_SOCKET_ENV)
    if FORK and path:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return _WarmModuleChild(path, module, args, env, log, needs)
    return _SpawnedModuleChild(module, args, env, log)


class ModuleChild(Child, Protocol):
    def wait(self) -> int: ...


class _WarmModuleChild:
    """A module's process forked by the warm process, over a connection of its own."""

    def __init__(
        self,
        path: str,
        module: str,
        args: list[str],
        env: Mapping[str, str],
        log: Path,
        needs: Iterable[str],
    ) -> None:
        import resource

        # What this process may use, the module's process may too (and no more).
        limits = {
            name: resource.getrlimit(getattr(resource, name))[0]
            for name in ("RLIMIT_CORE", "RLIMIT_FSIZE", "RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC")
            if hasattr(resource, name)
        }
        limits = {name: value for name, value in limits.items() if value != resource.RLIM_INFINITY}
        request = {
            "module": module,
            "args": args,
            "env": dict(env),
            "log": str(log),
            "needs": list(needs),
            "limits": limits,
        }
        self._connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._buffer = b""
        self._code: int | None = None
        self._pid = 0  # until the warm process names it
        try:
            self._connection.connect(path)
            self._answer("ready")  # the greeting comes first
            self._connection.sendall((json.dumps(request) + "\n").encode())
            self._pid = int(self._answer("started"))  # type: ignore[call-overload]
        except BaseException:
            self._connection.close()
            raise

    def _answer(self, key: str) -> object:
        """The value of the warm process's next answer, which must be `key`'s."""
        message = self._receive(STARTUP_LIMIT)
        if message is None or key not in message:  # start_module then starts afresh
            raise OSError(f"the warm process did not answer {key!r}")
        return message[key]

    def _receive(self, timeout: float | None) -> dict[str, object] | None:
        """The warm process's next message; None if none came within `timeout`."""
        import select

        while b"\n" not in self._buffer:
            readable, _, _ = select.select([self._connection], [], [], timeout)
            if not readable:
                return None
            chunk = self._connection.recv(65536)
            if not chunk:  # the warm process left: what it forked was killed with it
                return {"exited": self._pid, "code": -int(signal.SIGKILL)}
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def _read_exit(self, timeout: float | None) -> None:
        while self._code is None:
            try:
                message = self._receive(timeout)
            except OSError:
                message = {"exited": self._pid, "code": -int(signal.SIGKILL)}
            if message is None:
                return
            if "exited" in message:
                self._code = int(message["code"])  # type: ignore[call-overload]

    def poll(self) -> int | None:
        self._read_exit(timeout=0)
        return self._code

    def wait(self) -> int:
        self._read_exit(timeout=None)
        return self._code  # type: ignore[return-value]

    def kill(self) -> None:
        if self._code is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pid, signal.SIGKILL)
        # Leaving the connection ends what is left: the warm process kills what a client
        # leaves behind.
        with contextlib.suppress(OSError):
            self._connection.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._connection.close()
        if self._code is None:
            self._code = -int(signal.SIGKILL)


def share_warm_process(shared: bool) -> None:
    """Whether this run's warm process may serve later runs (before it starts)."""
    global SHARED
    with _zygote_lock:
        SHARED = shared


def sandbox_warm_process() -> None:
    """Start this run's warm process with a sandbox's environment (before it starts).

    Its children are forked from it: what it was started with is what they could read
    (in /proc/self/environ, say), whatever environment each is then given.
    """
    global SHARED, SANDBOXED
    with _zygote_lock:
        SHARED, SANDBOXED = False, True


def _limited(chosen: dict[str, int]) -> Callable[[], None]:
    return lambda: sandbox.apply_limits(chosen)


class _SpawnedChild:
    def __init__(self, pytest_args: list[str], env: Mapping[str, str], log: Path) -> None:
        self._start(["-m", "pytest", *pytest_args], env, log)

    def _start(
        self, arguments: list[str], env: Mapping[str, str], log: Path, session: bool = True
    ) -> None:
        with open(log, "wb") as output:
            self._process = subprocess.Popen(
                [sys.executable, *arguments],
                cwd=ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=session and os.name != "nt",
                preexec_fn=_limited(sandbox.limits()) if SANDBOXED and os.name != "nt" else None,
            )

    def poll(self) -> int | None:
        return self._process.poll()

    def kill(self) -> None:
        if os.name != "nt":
            with contextlib.suppress(ProcessLookupError, PermissionError):  # it may have ended
                os.killpg(self._process.pid, signal.SIGKILL)
        elif self._process.poll() is None:
            # taskkill ends the whole tree; Popen.kill() would end only the child. Once
            # the child has ended, Windows no longer knows its tree: nothing to end.
            subprocess.run(
                ["taskkill", "/F", "/T", "/PID", str(self._process.pid)],
                capture_output=True,
                check=False,
            )
            self._process.kill()
        self._process.wait()


class _SpawnedModuleChild(_SpawnedChild):
    """`python -m MODULE ARGS` as a new interpreter (it inherits this one's limits).

    It stays in this process's session, so that ending this process's tree (as the
    grader ends every child's) ends it and all it started too.
    """

    def __init__(self, module: str, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self._start(["-m", module, *args], env, log, session=False)

    def wait(self) -> int:
        return self._process.wait()

    def kill(self) -> None:
        if os.name == "nt":
            super().kill()  # taskkill: the tree, found from the process itself
            return
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()


def _kill_at_once(pid: int) -> None:
    """Kill a child the warm process forked, and its session if it has made one."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(OSError):
            kill(pid, signal.SIGKILL)


class _Zygote:
    """The grader's side of `autograder.zygote`: ask it to fork, learn when children end.

    `fork_limit` is how long a request waits for its child to start: past it, the caller
    starts one afresh (start_child).

    With `shared`, the warm process outlives this run (for `IDLE_LIMIT` seconds) so the
    next run starts warm; its socket's name is derived from the course's own code, so a
    changed grader or runtime gets a warm process of its own.
    """

    fork_limit = 90.0  # STARTUP_LIMIT, below; a test shortens it

    def __init__(self, shared: bool) -> None:
        path = _socket_path(shared)
        if path is None:  # no private place for a shared one: this run's own
            shared, path = False, _socket_path(False)
        self.path: str = path  # type: ignore[assignment]
        self.process: subprocess.Popen[bytes] | None = None
        connection = self._connect() if shared else None
        if connection is None:
            command = [sys.executable, "-m", "autograder.zygote", self.path]
            home = Path(self.path).parent / "home"
            self.process = subprocess.Popen(
                [*command, "--idle", str(IDLE_LIMIT)] if shared else command,
                cwd=ROOT,
                env=sandbox.environment(os.environ, home) if SANDBOXED else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # a warm process that fails is replaced, not read
                start_new_session=True,  # Ctrl-C in the terminal reaches the grader only
            )
            deadline = time.monotonic() + STARTUP_LIMIT
            while connection is None and time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                time.sleep(0.005)
                connection = self._connect()
            if connection is None:
                self.process.kill()
                self.process.wait()
                raise RuntimeError("the warm process did not start")
            if shared:
                self.process = None  # it outlives this run: not this run's to wait for
        self.connection = connection
        self._reader = connection.makefile("rb")
        self._lock = threading.Lock()  # one request (and its answer) at a time
        # Each request's answer, by the request's number. A request that times out is
        # given up, and the child it later starts is killed: before, its late answer was
        # taken as the next request's, and every later child of the run was the wrong one
        # (a busy machine's run then lost a whole step, "nothing was printed").
        self._requests = itertools.count(1)
        self._waiting: dict[int, queue.Queue[int]] = {}
        self._exited: dict[int, int] = {}
        self._ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, name="zygote-reader", daemon=True).start()

    def _connect(self) -> socket.socket | None:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(self.path)
        except OSError:
            connection.close()
            return None
        return connection

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in self._reader:
                message = json.loads(line)
                if "started" in message:
                    self._started(message)
                elif "exited" in message:
                    with self._changed:
                        self._exited[message["exited"]] = message["code"]
                        self._changed.notify_all()
        with self._changed:  # the warm process is gone: nothing it forked will report
            self._ended = True
            self._changed.notify_all()

    def _started(self, message: dict[str, Any]) -> None:
        pid = int(message["started"])
        with self._changed:  # with fork's giving up, one or the other: never both
            waiting = self._waiting.pop(message.get("id"), None)
            if waiting is not None:
                waiting.put(pid)
                return
        _kill_at_once(pid)  # a request given up: its child must not run

    @property
    def alive(self) -> bool:
        return not self._ended

    def fork(
        self, pytest_args: list[str], env: Mapping[str, str], log: Path, needs: Iterable[str]
    ) -> int:
        number = next(self._requests)
        request = {
            "id": number,
            "args": pytest_args,
            "env": dict(env),
            "log": str(log),
            "needs": list(needs),
        }
        if SANDBOXED:
            request["limits"] = sandbox.limits()
        answer: queue.Queue[int] = queue.Queue()
        with self._changed:
            self._waiting[number] = answer
        try:
            with self._lock:
                self.connection.sendall((json.dumps(request) + "\n").encode())
            return answer.get(timeout=self.fork_limit)
        except BaseException:
            with self._changed:  # given up: a child that started meanwhile is killed
                self._waiting.pop(number, None)
                late = None if answer.empty() else answer.get_nowait()
            if late is not None:
                _kill_at_once(late)
            raise

    def exit_code(self, pid: int) -> int | None:
        with self._changed:
            if pid in self._exited:
                return self._exited[pid]
        return None if self.alive else -int(signal.SIGKILL)

    def wait(self, pid: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exited or not self.alive, STARTUP_LIMIT)

    def stop(self) -> None:
        """Leave the warm process; wait for it if it served this run only."""
        # shutdown() ends the connection at once: close() alone would wait for the
        # reader's file object, and the warm process would not see this run leave.
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.connection.close()
        if self.process is not None:
            try:
                self.process.wait(timeout=STARTUP_LIMIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            with contextlib.suppress(OSError):  # the private folder of its socket
                Path(self.path).unlink(missing_ok=True)
                Path(self.path).parent.rmdir()


STARTUP_LIMIT = 90.0  # seconds for the warm process to start, or to fork a child
IDLE_LIMIT = 900.0  # seconds a shared warm process waits for the next run
_zygote_lock = threading.Lock()
_zygote: _Zygote | None = None
_zygote_failed = False


def _socket_path(shared: bool, root: Path = ROOT) -> str | None:
    """Where the warm process listens: short, as Unix sockets need (104 bytes on macOS).

    A shared one's name hashes what the warm process has imported (the grader, the
    course's runtime, the locked packages, this Python): a change to any of them, a
    `git pull` say, gets a fresh warm process, and the old one ends when idle. It lives
    in a folder only this user can enter; where no such folder can be had (None), the
    run's warm process is its own. A client sends its environment over the socket, so
    another user must never be able to stand in for the warm process.
    """
    if not shared:
        return str(Path(tempfile.mkdtemp(prefix="grade-")) / "warm.sock")
    folder = _private_folder()
    if folder is None:
        return None
    digest = hashlib.sha256(f"{sys.executable}\0{sys.version}\0{root}".encode())
    for package in ("autograder", "coursekit"):
        for source in sorted((root / package).rglob("*.py")):
            digest.update(source.read_bytes())
    for lock in sorted((root / "requirements").glob("*.txt")):
        digest.update(lock.read_bytes())
    return str(folder / f"{digest.hexdigest()[:16]}.sock")


def _private_folder() -> Path | None:
    """`<tmp>/autograder-<uid>`, made if missing, if only this user owns and enters it."""
    if not hasattr(os, "getuid"):
        return None
    folder = Path(tempfile.gettempdir()) / f"autograder-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    try:
        info = os.lstat(folder)  # lstat: a link planted there is not the folder
    except OSError:
        return None
    private = stat.S_ISDIR(info.st_mode) and not info.st_mode & 0o077
    return folder if private and info.st_uid == os.getuid() else None


def _warm_process() -> _Zygote | None:
    """The warm process, started (or found) on first use; None if it cannot start."""
    global _zygote, _zygote_failed
    with _zygote_lock:
        if _zygote is not None and _zygote.alive:
            return _zygote
        if _zygote_failed:
            return None
        try:
            _zygote = _Zygote(shared=SHARED)
        except Exception:
            _zygote_failed = True  # grade all the same, each child started fresh
            return None
        # A warm process that served this run only is waited for at exit, so it (and
        # through it every child) counts in this process's resource usage.
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


# One `ast.parse` at a time: the grader works out each step's imports from the threads that
# grade steps in parallel, and CPython 3.11 (3.11.7 here) can raise "SystemError: AST
# constructor recursion depth mismatch" when two threads parse at once (python/cpython
# issue 106905): a fresh-clone run of the course's checks hit it.
_parse_lock = threading.Lock()


def imports_of(files: Iterable[Path], local: Iterable[str] = ()) -> set[str]:
    """The modules that `files` import at their top level, but for the `local` ones.

    Read with `ast`, never imported: these are the course's files (tests, solutions).
    """
    local = set(local)
    found: set[str] = set()
    for file in files:
        with contextlib.suppress(OSError, SyntaxError, ValueError):
            text = file.read_text(encoding="utf-8")
            with _parse_lock:
                tree = ast.parse(text)
            for node in tree.body:
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module)
    return {name for name in found if name.partition(".")[0] not in local}
