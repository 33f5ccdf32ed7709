"""100 concurrent requests on one worker: an awaited upstream call against blocking ones.

Run it from the repository root (about 20 seconds):

    python benchmarks/async_vs_blocking.py                 # the app calls out with httpx2
    python benchmarks/async_vs_blocking.py --client httpx  # the same API, httpx 0.28's pool

It starts two uvicorn servers, each its own process with one worker:

1. the upstream: a simulated model service (`coursekit.upstream`) that answers
   `POST /predict` after awaiting 100 ms, so it can serve all 100 calls at once;
2. the app under test, with three routes that each make the same call to the upstream:
   `/awaited` awaits `httpx.AsyncClient.post`, `/blocking-async` calls the blocking
   `httpx.Client.post` inside `async def`, and `/blocking-def` makes that same blocking
   call inside a plain `def`, which FastAPI runs in its threadpool.

This process is the load generator: after a warm-up, it sends 100 concurrent requests to
each route and prints the wall time until the last answer, the requests per second, the
factor against `/awaited`, the most calls the upstream served at once during the round,
and the CPU time of the load generator and of the app (the app's only where `/proc`
exists, on Linux). Compare the rows with each other: the absolute numbers depend on the
machine and on whatever else runs on it.

This same file is the code both servers run: `uvicorn async_vs_blocking:app` and
`uvicorn async_vs_blocking:upstream_app --factory`.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from coursekit.server import free_port
from coursekit.upstream import make_upstream

# The HTTP client library the app (and this script) uses: httpx2, as the course teaches, or
# httpx 0.28, with the same API (what the course used before). The async client's CPU per
# request is what limits the awaited route, and the two differ there.
CLIENT_VARIABLE = "BENCHMARK_HTTP_CLIENT"
DEFAULT_CLIENT = "httpx2"
httpx: Any = importlib.import_module(os.environ.get(CLIENT_VARIABLE, DEFAULT_CLIENT))

HERE = Path(__file__).resolve().parent
REQUESTS = 100
UPSTREAM_DELAY = 0.1  # seconds the upstream waits before it answers
BODY = {"text": "The battery died after an hour, but the screen is lovely."}

# -- the app under test: one upstream call per request, made three ways -------------------

# Both clients may hold a connection for every request in flight, so the pools never queue.
POOL = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    # One client of each kind for the whole app, as a real service would keep them.
    url = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:9000")
    with httpx.Client(base_url=url, limits=POOL, timeout=30) as blocking_client:
        async with httpx.AsyncClient(base_url=url, limits=POOL, timeout=30) as client:
            yield {"client": client, "blocking_client": blocking_client}


app = FastAPI(title="Awaited or blocking upstream calls", lifespan=lifespan)


@app.get("/awaited")
async def awaited(request: Request) -> dict[str, Any]:
    # While this call waits, the event loop serves the other requests.
    response = await request.state.client.post("/predict", json=BODY)
    response.raise_for_status()
    return response.json()


@app.get("/blocking-async")
async def blocking_async(request: Request) -> dict[str, Any]:
    # No await: the one event loop is stuck here for the whole 100 ms, serving nobody else.
    response = request.state.blocking_client.post("/predict", json=BODY)
    response.raise_for_status()
    return response.json()


@app.get("/blocking-def")
def blocking_def(request: Request) -> dict[str, Any]:
    # The same blocking call, in a worker thread of FastAPI's threadpool (40 at once).
    response = request.state.blocking_client.post("/predict", json=BODY)
    response.raise_for_status()
    return response.json()


def upstream_app() -> FastAPI:
    """The simulated upstream, plus `POST /reset` to zero its counters between rounds."""
    upstream = make_upstream("model", delay=UPSTREAM_DELAY)

    @upstream.app.post("/reset")
    async def reset() -> dict[str, Any]:
        upstream.reset()
        return upstream.stats()

    return upstream.app


# -- the servers, each a uvicorn subprocess with one worker -------------------------------


class Server:
    """`python -m uvicorn <target>` on a free port, started and stopped by this script."""

    def __init__(self, target: str, *args: str, ready_path: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "uvicorn", target, *args, "--app-dir", str(HERE)]
        command += ["--port", str(self.port), "--loop", "asyncio", "--http", "h11"]
        command += ["--log-level", "warning", "--no-access-log"]
        # Keep idle connections open between rounds (uvicorn closes them after 5 s).
        command += ["--timeout-keep-alive", "120"]
        self.process = subprocess.Popen(command, env={**os.environ, **env})
        self._wait_until_it_answers(ready_path)

    def _wait_until_it_answers(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"uvicorn did not answer on {self.url}{path}")
            time.sleep(0.1)

    def cpu_seconds(self) -> float | None:
        """CPU time the server has used so far (user + system), or None without /proc."""
        stat = Path(f"/proc/{self.process.pid}/stat")
        if not stat.exists():
            return None
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- the load generator -------------------------------------------------------------------

# One connection per request in flight, each speaking HTTP/1.1 by hand: a load generator
# must cost far less than the server it measures. (An httpx.AsyncClient with a pool of
# 100 connections spends several ms of CPU per request keeping its pool, as much as the
# app under test, so on a busy machine it would measure itself.)


class Connection:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads their answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, path: str) -> int:
        """Send `GET path`, read the whole answer; its status code."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in header_lines if line)
        await self.reader.readexactly(int(headers["content-length"]))
        return int(status_line.split()[1])

    def close(self) -> None:
        self.writer.close()


@dataclass
class Round:
    path: str
    seconds: float  # from the first request sent to the last answer received
    upstream_peak: int  # the most calls the upstream served at once
    client_cpu: float  # CPU seconds this process spent sending and reading
    server_cpu: float | None  # CPU seconds the app under test spent


async def burst(connections: list[Connection], path: str) -> float:
    """One GET to `path` on every connection, all at once; the seconds until the last answer."""
    start = time.perf_counter()
    statuses = await asyncio.gather(*(connection.get(path) for connection in connections))
    seconds = time.perf_counter() - start
    failed = [status for status in statuses if status != 200]
    if failed:
        raise RuntimeError(
            f"{path}: {len(failed)} of {len(statuses)} requests failed: {failed[:5]}"
        )
    return seconds


async def measure(connections: list[Connection], app: Server, upstream: Server, path: str) -> Round:
    async with httpx.AsyncClient(base_url=upstream.url) as control:
        (await control.post("/reset")).raise_for_status()
        cpu, server_cpu = time.process_time(), app.cpu_seconds()
        seconds = await burst(connections, path)
        cpu, server_after = time.process_time() - cpu, app.cpu_seconds()
        stats = (await control.get("/stats")).json()
    spent = None if server_cpu is None or server_after is None else server_after - server_cpu
    return Round(path, seconds, stats["peak_in_flight"], cpu, spent)


async def run(app: Server, upstream: Server, repeat: int) -> list[Round]:
    connections = [await Connection.open(app.port) for _ in range(REQUESTS)]
    try:
        # Warm-up: open the app's connections to the upstream, start the threadpool's threads.
        for path in ("/awaited", "/blocking-def", "/awaited", "/blocking-def"):
            await burst(connections, path)
        await burst(connections[:3], "/blocking-async")
        rounds = []
        for path, times in (
            ("/awaited", repeat),
            ("/blocking-async", 1),
            ("/blocking-def", repeat),
        ):
            # The fast rounds last under a second, so a hiccup of the machine weighs on them
            # heavily: run them `repeat` times and keep the median. The slow one lasts 10 s.
            tries = [await measure(connections, app, upstream, path) for _ in range(times)]
            rounds.append(sorted(tries, key=lambda row: row.seconds)[len(tries) // 2])
        return rounds
    finally:
        for connection in connections:
            connection.close()


def report(rounds: list[Round], started: float) -> None:
    awaited = rounds[0].seconds
    print(f"{REQUESTS} concurrent requests to one uvicorn worker;")
    print(f"each request waits {UPSTREAM_DELAY * 1000:.0f} ms on an upstream model service.")
    print()
    header = ("route", "wall s", "requests/s", "x awaited", "upstream peak", "load-gen CPU s")
    print(f"{header[0]:16}{''.join(f'{title:>15}' for title in header[1:])}{'app CPU s':>12}")
    for row in rounds:
        server_cpu = "n/a" if row.server_cpu is None else f"{row.server_cpu:.2f}"
        print(
            f"{row.path:16}{row.seconds:15.2f}{REQUESTS / row.seconds:15.1f}"
            f"{row.seconds / awaited:15.1f}{row.upstream_peak:15d}{row.client_cpu:15.2f}"
            f"{server_cpu:>12}"
        )
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print()
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs{load}; "
        f"asyncio loop, h11; client {httpx.__name__} {httpx.__version__}; "
        f"measured in {time.perf_counter() - started:.0f} s"
    )


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--client", choices=["httpx", "httpx2"], default=DEFAULT_CLIENT)
    chosen = parser.parse_args().client
    if os.environ.get(CLIENT_VARIABLE, DEFAULT_CLIENT) != chosen:
        # The library is chosen at import, here and in the app's process: start anew with it.
        env = {**os.environ, CLIENT_VARIABLE: chosen}
        raise SystemExit(subprocess.call([sys.executable, __file__, *sys.argv[1:]], env=env))
    started = time.perf_counter()
    upstream = Server("async_vs_blocking:upstream_app", "--factory", ready_path="/stats", env={})
    try:
        env = {"UPSTREAM_URL": upstream.url}
        app_server = Server("async_vs_blocking:app", ready_path="/openapi.json", env=env)
        try:
            rounds = asyncio.run(run(app_server, upstream, repeat=3))
        finally:
            app_server.stop()
    finally:
        upstream.stop()
    report(rounds, started)


if __name__ == "__main__":
    main()
