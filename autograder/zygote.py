"""The warm process: import what grading children need once, then fork one per request.

    python -m autograder.zygote [MODULE ...]

Started by `autograder.processes` on Linux and macOS. It imports MODULE ... (then
`autograder.warm`), and reads one JSON request a line on stdin:
`{"args": [...], "env": {...}, "log": "path"}`. For each it forks a child that becomes
what `python -m pytest ARGS` would be, in the repository root, with exactly that
environment, its output in the log, in a session of its own (so the grader can kill
it with everything it starts). It answers `{"started": PID}` at once and
`{"exited": PID, "code": N}` when the child ends (a negative N: killed by signal -N).
When stdin closes (the grader is done, or died), it kills what is left and exits.

It never imports a learner's module: only the children do, after the fork.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import sys

from autograder.catalog import ROOT


def _answer(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _run_child(request: dict[str, object], wakeup: tuple[int, int]) -> None:
    """In the forked child: become `python -m pytest ARGS`, then leave."""
    code = 3  # pytest's "internal error", should anything below raise
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wakeup:
            os.close(fd)
        output = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        os.environ.clear()
        os.environ.update(request["env"])  # type: ignore[arg-type]
        sys.dont_write_bytecode = True
        os.chdir(ROOT)
        import pytest

        code = int(pytest.main(list(request["args"])))  # type: ignore[call-overload]
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        # Leave at once: threads and atexit handlers a learner's code left behind
        # must not keep the child alive after its tests are done.
        os._exit(code)


def _reap(children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _answer({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def serve() -> None:
    """Fork a child per request on stdin until stdin closes."""
    wakeup = os.pipe()
    for fd in wakeup:
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd fires
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the grader's to handle
    children: set[int] = set()
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "request")
    selector.register(wakeup[0], selectors.EVENT_READ, "child")
    pending = b""  # read unbuffered: a buffered reader could hide a second request
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "child":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wakeup[0], 4096)
                    _reap(children)
                    continue
                chunk = os.read(0, 65536)
                if not chunk:
                    return
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    pid = os.fork()
                    if pid == 0:
                        _run_child(json.loads(line), wakeup)
                    children.add(pid)
                    _answer({"started": pid})
            _reap(children)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def main(modules: list[str]) -> None:
    from autograder.warm import warm_up

    # Nothing a warm import prints may reach the channel the grader reads.
    with contextlib.redirect_stdout(sys.stderr):
        warm_up(modules or None)
    _answer({"ready": os.getpid()})
    serve()


if __name__ == "__main__":
    main(sys.argv[1:])
