"""def vs async def for CPU-bound inference, measured under a real uvicorn server.

Run it from the repository root:

    python benchmarks/def_vs_async.py           # about 30 s
    python benchmarks/def_vs_async.py --quick   # about 15 s (lesson 03 runs it)

It starts `def_vs_async_app:app` (beside this file) under its own one-worker uvicorn
server, in a separate process, so this load generator never competes with the server for
its GIL. The server's BLAS library gets one thread per matrix product
(`OPENBLAS_NUM_THREADS=1` and friends): one request then keeps at most one core busy, and
the threadpool's threads map onto the cores we have.

For each route (NumPy or pure-Python work, `async def` or `def`) it keeps `--concurrency`
prediction requests in flight for a fixed time while a probe asks `/health` every 20 ms,
one probe at a time, and prints requests per second, the predictions' p50 and p99
latency, and the probes' p50 and p99 latency. The last lines compare `def` with
`async def` as ratios within this one run, which is what to read on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2

HERE = Path(__file__).resolve().parent
PROBE_EVERY = 0.020  # seconds between the end of one /health probe and the next
ROUTES = {
    "/dense/async": "NumPy, async def",
    "/dense/def": "NumPy, def",
    "/python/async": "pure Python, async def",
    "/python/def": "pure Python, def",
}
# One BLAS thread per product: N threadpool threads then use at most N cores, predictably.
ONE_BLAS_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
ONE_BLAS_THREAD["MKL_NUM_THREADS"] = "1"


@contextmanager
def uvicorn_server() -> Iterator[str]:
    """Run the benchmark app under `python -m uvicorn` on a free loopback port; yield its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "def_vs_async_app:app", "--app-dir", str(HERE)]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(command, env={**os.environ, **ONE_BLAS_THREAD})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
                break
            except httpx2.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the uvicorn server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Result:
    requests_per_second: float
    latencies: list[float]  # seconds, one per prediction
    probes: list[float]  # seconds, one per /health probe


async def load_test(base_url: str, path: str, seconds: float, concurrency: int) -> Result:
    """Keep `concurrency` predictions in flight for `seconds` while probing /health."""
    latencies: list[float] = []
    probes: list[float] = []
    stop_at = time.perf_counter() + seconds
    limits = httpx2.Limits(max_connections=concurrency)
    # Two clients: a probe never waits for a free connection behind the predictions.
    async with (
        httpx2.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http,
        httpx2.AsyncClient(base_url=base_url, timeout=60) as prober,
    ):

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                (await http.post(path)).raise_for_status()
                latencies.append(time.perf_counter() - started)

        async def probe() -> None:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                (await prober.get("/health")).raise_for_status()
                probes.append(time.perf_counter() - started)
                await asyncio.sleep(PROBE_EVERY)

        started = time.perf_counter()
        await asyncio.gather(probe(), *(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started  # includes the last requests' tails
    return Result(len(latencies) / elapsed, latencies, probes)


def row(label: str, result: Result) -> str:
    ms = 1000
    cells = [
        f"{result.requests_per_second:7.0f}",
        f"{percentile(result.latencies, 0.50) * ms:7.0f}",
        f"{percentile(result.latencies, 0.99) * ms:7.0f}",
        f"{percentile(result.probes, 0.50) * ms:9.1f}",
        f"{percentile(result.probes, 0.99) * ms:9.1f}",
    ]
    return f"{label:24}" + "".join(cells)


def compare(kind: str, slow: Result, fast: Result) -> str:
    """One line: how much better `def` (fast) did than `async def` (slow), as ratios."""
    health = percentile(slow.probes, 0.50) / percentile(fast.probes, 0.50)
    throughput = fast.requests_per_second / slow.requests_per_second
    return (
        f"{kind:13} /health p50 {health:5.1f}x lower with def;"
        f" req/s with def {throughput:4.2f}x those with async def"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2.5 s per route instead of 6 s")
    parser.add_argument("--concurrency", type=int, default=4, help="predictions in flight")
    args = parser.parse_args()
    seconds = 2.5 if args.quick else 6.0

    started = time.perf_counter()
    results: dict[str, Result] = {}
    with uvicorn_server() as base_url:
        for path in ROUTES:
            # Warm up: the threadpool starts its threads, NumPy its buffers; not counted.
            asyncio.run(load_test(base_url, path, 0.3, args.concurrency))
            results[path] = asyncio.run(load_test(base_url, path, seconds, args.concurrency))

    print(f"{args.concurrency} predictions in flight, /health probed every 20 ms, {seconds:g} s")
    print(f"{'route':24}  req/s  p50 ms  p99 ms  health p50  health p99")
    for path, label in ROUTES.items():
        print(row(label, results[path]))
    print()
    print(compare("NumPy:", results["/dense/async"], results["/dense/def"]))
    print(compare("pure Python:", results["/python/async"], results["/python/def"]))
    print()
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.1f}, one uvicorn worker;"
        f" run in {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
