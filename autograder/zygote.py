"""The warm process: import what grading children need once, then fork one per request.

    python -m autograder.zygote SOCKET [--idle SECONDS]

Started by `autograder.processes` on Linux and macOS. It listens on the Unix socket
SOCKET at once, and warms up (`autograder.warm`) between requests. It greets each
client with `{"ready": PID}`; a client sends one JSON request a line,
`{"args": [...], "env": {...}, "log": "path", "needs": [...]}`. For each, it imports
the `needs` it lacks, then forks a child that becomes what `python -m pytest ARGS`
would be: in the repository root, with exactly that environment, its output in the
log, in a session of its own (so the grader can kill it with everything it starts). It
answers `{"started": PID, "id": ID}` at once (ID: the request's "id", which a client
matches its answers by) and `{"exited": PID, "code": N}` when the child ends (negative N:
killed by signal -N).

A client that disconnects has its children killed. With `--idle SECONDS` the process
outlives its clients (so the next `pytest exercises/` starts warm) and exits after that
long with no client and no child; without it, it exits when its last client leaves.

It never imports a learner's module: only the children do, after the fork.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from autograder.catalog import ROOT

NO_CLIENT_LIMIT = 90.0  # seconds a server for one run waits for that run to connect


def _run_child(request: dict[str, object], keep: list[int]) -> None:
    """In the forked child: become `python -m pytest ARGS`, then leave."""
    code = 3  # pytest's "internal error", should anything below raise
    try:
        os.setsid()
        if request.get("limits"):  # an instructor's run: see autograder.sandbox
            from autograder.sandbox import apply_limits

            apply_limits(request["limits"])  # type: ignore[arg-type]
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_DFL)
        for fd in keep:  # the server's sockets and pipes are not the child's
            with contextlib.suppress(OSError):
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
        if request.get("module"):  # `python -m MODULE ARGS` (autograder.processes.run_module)
            code = _run_module(str(request["module"]), list(request["args"]))  # type: ignore[call-overload]
        else:
            import pytest

            code = int(pytest.main(list(request["args"])))  # type: ignore[call-overload]
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        # Leave at once: threads and atexit handlers a learner's code left behind
        # must not keep the child alive after its tests are done.
        os._exit(code)


def _run_module(module: str, args: list[str]) -> int:
    """Be `python -m MODULE ARGS`: its exit code."""
    import runpy

    sys.argv = [module, *args]
    sys.path.insert(0, str(ROOT))
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None:
            return 0
        return stop.code if isinstance(stop.code, int) else 1
    return 0


@dataclass
class Client:
    connection: socket.socket
    pending: bytes = b""
    children: set[int] = field(default_factory=set)

    def answer(self, message: dict[str, object]) -> None:
        with contextlib.suppress(OSError):  # a client that left is cleaned up on EOF
            self.connection.sendall((json.dumps(message) + "\n").encode())


class Server:
    def __init__(self, path: str, idle: float | None) -> None:
        self.path = path
        self.idle = idle
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by a server that died
        old_mask = os.umask(0o177)  # only this user may ask for a fork
        try:
            self.listener.bind(path)
        finally:
            os.umask(old_mask)
        self.bound = os.stat(path).st_ino  # to remove only our own socket file at exit
        self.listener.listen(16)
        self.wakeup = os.pipe()
        for fd in self.wakeup:
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wakeup[1])
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd fires
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the grader's to handle
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wakeup[0], selectors.EVENT_READ, "child")
        self.clients: dict[int, Client] = {}  # by socket fd
        self.owners: dict[int, Client] = {}  # child pid -> who asked for it
        self.had_client = False
        self.started = self.last_activity = time.monotonic()

    def _fds(self) -> list[int]:
        return [self.listener.fileno(), *self.wakeup, *self.clients]

    def _fork(self, client: Client, request: dict[str, object]) -> None:
        from autograder.warm import warm

        for name in request.get("needs", []):  # type: ignore[union-attr]
            warm(str(name))
        # Everything imported so far is never freed: out of the collector's sight, the
        # child's full collections do not walk the ~10^5 objects it inherits (each such
        # walk took about 0.3 s in a step-06 child), and pages stay shared after the fork.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            _run_child(request, self._fds())
        gc.unfreeze()  # this process goes on collecting its own garbage
        client.children.add(pid)
        self.owners[pid] = client
        client.answer({"started": pid, "id": request.get("id")})

    def _reap(self) -> None:
        while self.owners:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            client = self.owners.pop(pid, None)
            if client is not None:
                client.children.discard(pid)
                client.answer({"exited": pid, "code": os.waitstatus_to_exitcode(status)})

    def _drop(self, client: Client) -> None:
        self.selector.unregister(client.connection)
        del self.clients[client.connection.fileno()]
        for pid in client.children:  # nobody is left to watch them
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        client.connection.close()

    def _handle(self, key: selectors.SelectorKey) -> None:
        if key.data == "accept":
            connection, _ = self.listener.accept()
            client = Client(connection)
            self.clients[connection.fileno()] = client
            self.selector.register(connection, selectors.EVENT_READ, client)
            self.had_client = True
            client.answer({"ready": os.getpid()})
        elif key.data == "child":
            with contextlib.suppress(BlockingIOError):
                os.read(self.wakeup[0], 4096)
        else:
            client = key.data
            try:
                chunk = client.connection.recv(65536)
            except OSError:  # ECONNRESET: the client was killed with answers unread
                chunk = b""
            if not chunk:
                self._drop(client)
                return
            *lines, client.pending = (client.pending + chunk).split(b"\n")
            for line in lines:
                self._fork(client, json.loads(line))
        self._reap()

    def _done(self) -> bool:
        if self.clients or self.owners:
            return False
        if self.idle is None:  # serving one grading run: done when it leaves
            return self.had_client or time.monotonic() - self.started > NO_CLIENT_LIMIT
        return time.monotonic() - self.last_activity > self.idle

    def serve(self, warm_next: Iterator[None]) -> None:
        """Answer requests; warm up one module at a time while none is waiting."""
        warming = True
        try:
            while not self._done():
                events = self.selector.select(0 if warming else 1.0)
                if events or self.clients or self.owners:
                    self.last_activity = time.monotonic()
                for key, _ in events:
                    self._handle(key)
                self._reap()
                if warming and not events:
                    warming = next(warm_next, False) is not False
        finally:
            for pid in list(self.owners):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self.bound:
                    os.unlink(self.path)
            self.listener.close()


def _warming(modules: list[str]) -> Iterator[None]:
    from autograder.warm import warm

    for name in modules:
        # Nothing a warm import prints may reach a terminal or a client.
        with contextlib.redirect_stdout(sys.stderr):
            warm(name)
        yield None


def main(argv: list[str] | None = None) -> None:
    from autograder.warm import MODULES

    parser = argparse.ArgumentParser(prog="python -m autograder.zygote")
    parser.add_argument("socket")
    parser.add_argument("--idle", type=float, default=None)
    args = parser.parse_args(argv)
    server = Server(args.socket, args.idle)
    # Shared, it warms everything while idle, for whatever the next run grades; for
    # one run, only what that run's requests need, so grading one step stays cheap.
    server.serve(_warming(["pytest", *MODULES] if args.idle is not None else []))


if __name__ == "__main__":
    main()
