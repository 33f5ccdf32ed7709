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
    import uvicorn  # here, not at the top: importing this module stays cheap

    port = port or free_port(host)
    config.setdefault("log_level", "warning")
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **config))
    thread = threading.Thread(target=server.run, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"uvicorn stopped before it started serving on {host}:{port}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"uvicorn did not start on {host}:{port} within {startup_timeout} s")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
