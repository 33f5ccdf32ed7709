"""What token streaming costs: FastAPI's native SSE against a hand-written StreamingResponse.

Run it from the repository root (Linux: it reads the server's CPU and memory in /proc):

    python benchmarks/sse_streaming.py           # about a minute
    python benchmarks/sse_streaming.py --quick   # under a minute

For each implementation it starts its own uvicorn server, one worker, as a subprocess
(so the server's CPU and memory are measured apart from the load generator's), then
measures:

1. saturation: events per second with 32 streams that never wait between events;
2. capacity: the most concurrent streams at 20 tokens/s each whose time to first
   token stays under 250 ms at the 99th percentile (levels double until one fails);
3. 1,000 slow streams at once: all complete, with no error, and the server's memory
   per open stream, on a fresh server (`--memory-only` runs only this part).

Both implementations send the very same bytes per event. The load generator is plain
asyncio sockets (no HTTP library), so it costs far less CPU than the server; the
report prints both. sse-starlette is measured too, when it is installed.

This same file is the app the servers run: `uvicorn sse_streaming:app`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

HERE = Path(__file__).resolve().parent
TTFT_LIMIT = 0.250  # seconds, at the 99th percentile
TOKEN_RATE = 20  # tokens per second per stream in the capacity test

# -- the app under test -------------------------------------------------------------------

app = FastAPI(title="SSE benchmark")

Count = Annotated[int, Query(ge=1, le=100_000)]
Delay = Annotated[float, Query(ge=0, le=10)]


async def tokens(n: int, delay: float) -> AsyncIterator[str]:
    """A stand-in model: `n` tokens, `delay` seconds apart (the cost is the transport)."""
    for _ in range(n):
        await asyncio.sleep(delay)
        yield " token"


@app.get("/native", response_class=EventSourceResponse)
async def native(n: Count = 20, delay: Delay = 0.0) -> AsyncIterator[ServerSentEvent]:
    index = 0
    async for token in tokens(n, delay):
        yield ServerSentEvent(event="token", id=str(index), data={"token": token})
        index += 1
    yield ServerSentEvent(event="done", raw_data="[DONE]")


def frame(event: str, data: str, event_id: str | None = None) -> bytes:
    """One SSE event, byte for byte what fastapi.sse writes for the same fields."""
    lines = [f"event: {event}", f"data: {data}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    return ("\n".join(lines) + "\n\n").encode()


@app.get("/manual")
async def manual(n: Count = 20, delay: Delay = 0.0) -> StreamingResponse:
    async def frames() -> AsyncIterator[bytes]:
        index = 0
        async for token in tokens(n, delay):
            yield frame("token", json.dumps({"token": token}), str(index))
            index += 1
        yield frame("done", "[DONE]")

    return StreamingResponse(
        frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


try:
    from sse_starlette import EventSourceResponse as StarletteEventSourceResponse
except ImportError:
    StarletteEventSourceResponse = None
else:

    @app.get("/sse_starlette")
    async def sse_starlette(n: Count = 20, delay: Delay = 0.0) -> StarletteEventSourceResponse:
        async def events() -> AsyncIterator[dict[str, str]]:
            index = 0
            async for token in tokens(n, delay):
                yield {"event": "token", "id": str(index), "data": json.dumps({"token": token})}
                index += 1
            yield {"event": "done", "data": "[DONE]"}

        return StarletteEventSourceResponse(events())


# -- the server, measured from outside ----------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Server:
    """A one-worker uvicorn subprocess whose CPU time and memory we can read."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        command = [sys.executable, "-m", "uvicorn", "sse_streaming:app", "--app-dir", str(HERE)]
        command += ["--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        command += ["--backlog", "4096"]
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("the uvicorn server did not start") from None
                time.sleep(0.1)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def memory_kib(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"{field} not in /proc status")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# -- the load generator -------------------------------------------------------------------


@dataclass
class StreamResult:
    ttft: float | None  # seconds from sending the request to the first event
    events: int
    done: bool
    error: str | None


async def one_stream(port: int, target: str, start_after: float = 0.0) -> StreamResult:
    """Open one stream with a raw HTTP/1.1 request; count its events; time the first."""
    await asyncio.sleep(start_after)
    events, first, done, tail = 0, None, False, b""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = time.perf_counter()
        writer.write(f"GET {target} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return StreamResult(None, 0, False, head.split(b"\r\n", 1)[0].decode())
        while chunk := await reader.read(65536):
            # Keep a short tail, so a marker split across two reads is still seen once.
            window = tail + chunk
            found = window.count(b"data:")
            if found and first is None:
                first = time.perf_counter() - sent
            events += found
            done = done or b"[DONE]" in window
            tail = window[-5:]
        writer.close()
        await writer.wait_closed()
        return StreamResult(first, events, done, None)
    except (OSError, asyncio.IncompleteReadError) as exc:
        return StreamResult(first, events, done, type(exc).__name__)


async def run_streams(port: int, targets: list[str], ramp: float) -> list[StreamResult]:
    """Run one stream per target, their starts spread evenly over `ramp` seconds."""
    spacing = ramp / max(len(targets), 1)
    return await asyncio.gather(
        *(one_stream(port, target, i * spacing) for i, target in enumerate(targets))
    )


@dataclass
class Measured:
    results: list[StreamResult]
    seconds: float
    server_cpu: float  # fraction of one core
    client_cpu: float  # fraction of one core
    peak_rss_kib: int


def measure(server: Server, targets: list[str], ramp: float = 0.0) -> Measured:
    peak = server.memory_kib()
    server_cpu, client_cpu, started = server.cpu_seconds(), time.process_time(), time.perf_counter()

    async def with_memory_sampling() -> list[StreamResult]:
        nonlocal peak
        task = asyncio.ensure_future(run_streams(server.port, targets, ramp))
        while not task.done():
            peak = max(peak, server.memory_kib())
            await asyncio.sleep(0.05)
        return task.result()

    results = asyncio.run(with_memory_sampling())
    seconds = time.perf_counter() - started
    return Measured(
        results,
        seconds,
        (server.cpu_seconds() - server_cpu) / seconds,
        (time.process_time() - client_cpu) / seconds,
        peak,
    )


def failures(results: list[StreamResult], events: int) -> int:
    """Streams that errored, ended early or missed the end marker."""
    return sum(1 for r in results if r.error or not r.done or r.events != events + 1)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def bench(path: str, quick: bool, memory_only: bool = False) -> dict[str, object]:
    report: dict[str, object] = {}
    if not memory_only:
        server = Server()
        try:
            report.update(throughput(server, path, quick))
        finally:
            server.stop()
    # A fresh server for the memory figure: a process keeps the memory it freed, so after
    # the runs above its RSS would no longer grow with new streams (it once read 0.0 KiB).
    server = Server()
    try:
        report.update(memory(server, path, quick))
    finally:
        server.stop()
    return report


def throughput(server: Server, path: str, quick: bool) -> dict[str, object]:
    report: dict[str, object] = {}
    # 1. Saturation: no delay, 32 streams at once; every event costs only transport.
    n = 400 if quick else 2000
    m = measure(server, [f"{path}?n={n}"] * 32)
    total = sum(r.events for r in m.results)
    report["events/s at saturation"] = round(total / m.seconds)
    report["  server CPU (cores)"] = round(m.server_cpu, 2)
    report["  load generator CPU (cores)"] = round(m.client_cpu, 2)
    report["  failed streams"] = failures(m.results, n)

    # 2. Capacity at 20 tokens/s: each stream lasts 2 s, starts spread over 1 s.
    n, delay = 2 * TOKEN_RATE, 1 / TOKEN_RATE
    held, level = 0, 100
    levels = (100, 400, 1600) if quick else (100, 200, 400, 800, 1600, 3200)
    for level in levels:
        m = measure(server, [f"{path}?n={n}&delay={delay}"] * level, ramp=1.0)
        ttfts = [r.ttft for r in m.results if r.ttft is not None]
        ok = failures(m.results, n) == 0 and len(ttfts) == level
        worst = p99(ttfts) if ttfts else float("inf")
        print(f"  {path}: {level} streams at {TOKEN_RATE} tok/s, TTFT p99 {worst * 1000:.0f} ms")
        if not ok or worst >= TTFT_LIMIT:
            break
        held = level
    report[f"streams held at {TOKEN_RATE} tok/s, TTFT p99 < 250 ms"] = (
        f">= {held}" if held == levels[-1] else held
    )
    return report


def memory(server: Server, path: str, quick: bool) -> dict[str, object]:
    """3. 1,000 slow streams at once on a fresh server, and the memory each one holds."""
    report: dict[str, object] = {}
    # Warm up first (imports, first-request caches), so the baseline is a server at rest.
    measure(server, [f"{path}?n=2"] * 20)
    baseline = server.memory_kib()
    n, delay = (5, 0.4) if quick else (10, 0.5)
    m = measure(server, [f"{path}?n={n}&delay={delay}"] * 1000, ramp=1.0)
    report["1000 slow streams: failed"] = failures(m.results, n)
    report["  server memory per open stream (KiB)"] = round((m.peak_rss_kib - baseline) / 1000, 1)
    report["  server peak RSS (MiB)"] = round(server.memory_kib("VmHWM") / 1024, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run (under a minute)")
    parser.add_argument(
        "--memory-only", action="store_true", help="only part 3: 1,000 slow streams and memory"
    )
    args = parser.parse_args()
    implementations = {"fastapi.sse": "/native", "StreamingResponse": "/manual"}
    if StarletteEventSourceResponse is not None:
        implementations["sse-starlette"] = "/sse_starlette"
    else:
        print("sse-starlette is not installed: skipped")
    started = time.perf_counter()
    reports = {
        name: bench(path, args.quick, args.memory_only) for name, path in implementations.items()
    }
    print()
    print(f"{'':48}" + "".join(f"{name:>20}" for name in reports))
    for key in next(iter(reports.values())):
        print(f"{key:48}" + "".join(f"{r[key]!s:>20}" for r in reports.values()))
    kind = "memory-only" if args.memory_only else "quick" if args.quick else "full"
    print(
        f"\n{time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, one uvicorn worker (asyncio loop, h11); "
        f"{kind} run in {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
