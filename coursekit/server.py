"""Run an ASGI app under a real uvicorn server in a background thread.

Notebooks cannot call `uvicorn.run()` (Jupyter's event loop is already running), and
some behaviour only shows under a real server: incremental streaming, many requests
in flight at once, background work after the response. `serve_in_thread` gives the
lessons and the graded tests one way to get such a server on a free loopback port.
"""

from __future__ import annotations

import contextlib
import functools
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


@functools.cache
def _quick_server_class() -> type:
    """uvicorn's Server, stopping at once when asked (imports uvicorn only when first called)."""
    import asyncio

    import uvicorn

    class QuickServer(uvicorn.Server):
        """A uvicorn Server that stops in milliseconds instead of about 0.2 s.

        uvicorn notices `should_exit` at its next 0.1 s tick, then sleeps a fixed 0.1 s
        before it waits for open connections, polling every 0.1 s. That is nothing for a
        server that runs for hours, and most of the time of a test that starts and stops
        a few servers. Here `request_stop()` wakes the main loop at once, and shutdown
        polls for the last connections every 5 ms. The graceful part is unchanged:
        requests in flight finish (or are cancelled after `timeout_graceful_shutdown`),
        then the app's lifespan shuts down. Written against uvicorn 0.54 (pinned).
        """

        async def startup(self, sockets: Any = None) -> None:
            # Made before `started` turns True, so `request_stop()` always finds them.
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            await super().startup(sockets)

        def request_stop(self) -> None:
            """Ask for a graceful shutdown, from any thread."""
            self.should_exit = True
            loop = getattr(self, "_loop", None)
            if loop is not None and not loop.is_closed():
                # RuntimeError: the loop closed meanwhile, so the server has stopped already.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._wake.set)

        async def main_loop(self) -> None:
            counter = 0
            should_exit = await self.on_tick(counter)
            while not should_exit:
                counter = (counter + 1) % 864000
                # uvicorn's 0.1 s tick (the Date header, the max-requests check), cut
                # short by request_stop().
                try:
                    async with asyncio.timeout(0.1):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                should_exit = await self.on_tick(counter)

        async def shutdown(self, sockets: Any = None) -> None:
            for server in self.servers:
                server.close()
            for sock in sockets or []:
                sock.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()  # idle keep-alive ones close now, busy ones after
            try:
                async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                    while self.server_state.connections or self.server_state.tasks:
                        await asyncio.sleep(0.005)
                    for server in self.servers:
                        await server.wait_closed()
            except TimeoutError:
                for task in self.server_state.tasks:
                    task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
            await self.lifespan.shutdown()

    return QuickServer


class ThreadedServer:
    """A uvicorn server in a daemon thread: `start()` it, `stop()` it (see `serve_in_thread`)."""

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int | None = None, **config: Any
    ):
        import uvicorn  # here, not at the top: importing this module stays cheap

        self.host, self.port = host, port or free_port(host)
        config.setdefault("log_level", "warning")
        server_class = _quick_server_class()
        self.server = server_class(uvicorn.Config(app, host=host, port=self.port, **config))
        self.thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)

    def _run(self) -> None:
        # uvicorn ends a start-up that fails with sys.exit(3), after logging why: in a
        # thread that is only the thread's end, which `start` reports.
        with contextlib.suppress(SystemExit):
            self.server.run()

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
                self.server.request_stop()
                raise TimeoutError(
                    f"uvicorn did not start on {self.host}:{self.port} within {timeout} s"
                )
            time.sleep(0.002)
        return self.base_url

    def stop(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Ask the server to shut down gracefully; with `wait`, until it has."""
        self.server.request_stop()
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
def serve_app_in_thread(app: Any, **config: Any) -> Iterator[str]:
    """As `serve_in_thread`, for an app under test: a start-up that fails raises why.

    uvicorn only logs a lifespan's exception and stops. The lifespan is then run once
    more under the test client, which raises it; if it passes there, an AssertionError
    says the app did not start.
    """
    stack = contextlib.ExitStack()
    try:
        base_url = stack.enter_context(serve_in_thread(app, **config))
    except RuntimeError:
        from fastapi.testclient import TestClient

        with TestClient(app):
            pass
        raise AssertionError("Your app did not start under uvicorn: check its lifespan.") from None
    with stack:
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
    takes as long as stopping the slowest (a few milliseconds when no request is left).
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
