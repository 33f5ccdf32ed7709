"""Run an ASGI app under a real uvicorn server in a background thread.

Notebooks cannot call `uvicorn.run()` (Jupyter's event loop is already running), and
some behaviour only shows under a real server: incremental streaming, many requests
in flight at once, background work after the response. `serve_in_thread` gives the
lessons and the graded tests one way to get such a server on a free loopback port.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """A uvicorn server in a daemon thread: `start()` it, `stop()` it (see `serve_in_thread`)."""

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int | None = None, **config: Any
    ):
        import uvicorn  # here, not at the top: importing this module stays cheap

        self.host, self.port = host, port or free_port(host)
        config.setdefault("log_level", "warning")
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, **config))
        self.thread = threading.Thread(
            target=self.server.run, name=f"uvicorn:{self.port}", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; return the base URL once the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(
                    f"uvicorn stopped before it started serving on {self.host}:{self.port}"
                )
            if time.monotonic() > deadline:
                self.server.should_exit = True
                raise TimeoutError(
                    f"uvicorn did not start on {self.host}:{self.port} within {timeout} s"
                )
            time.sleep(0.01)
        return self.base_url

    def stop(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Ask the server to shut down gracefully; with `wait`, until it has."""
        self.server.should_exit = True
        if wait:
            self.thread.join(timeout=timeout)


@contextmanager
def serve_in_thread(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout: float = 10.0,
    **config: Any,
) -> Iterator[str]:
    """Serve `app` with uvicorn in a daemon thread; yield its base URL.

    The server runs the app's lifespan, answers until the `with` block ends, then
    shuts down gracefully. Extra keyword arguments go to `uvicorn.Config`
    (for example `timeout_graceful_shutdown=1`).
    """
    with serve_many_in_threads(
        [app], host=host, startup_timeout=startup_timeout, ports=[port], **config
    ) as (base_url,):
        yield base_url


@contextmanager
def serve_many_in_threads(
    apps: list[Any],
    *,
    host: str = "127.0.0.1",
    ports: list[int | None] | None = None,
    startup_timeout: float = 10.0,
    **config: Any,
) -> Iterator[list[str]]:
    """Serve each app as `serve_in_thread` does; yield their base URLs, in order.

    The servers are asked to stop all at once and then waited for, so stopping several
    takes as long as stopping one (each needs about 0.2 s to shut down gracefully).
    """
    servers = [
        ThreadedServer(app, host=host, port=port, **config)
        for app, port in zip(apps, ports or [None] * len(apps), strict=True)
    ]
    started: list[ThreadedServer] = []
    try:
        for server in servers:
            server.start(startup_timeout)
            started.append(server)
        yield [server.base_url for server in servers]
    finally:
        for server in started:
            server.stop(wait=False)
        for server in started:
            server.stop(timeout=startup_timeout)
