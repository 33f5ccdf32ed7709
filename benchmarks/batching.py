"""Micro-batching measured: the cost split of a model call, then four servers side by side.

Run it from the repository root (Linux or macOS: gunicorn does not run on Windows):

    python benchmarks/batching.py           # about 1 minute
    python benchmarks/batching.py --quick   # about 25 s (lesson 11 runs it)

Part 1, in this process: how long one `predict_proba` call takes for 1 row and for 64
rows, for the course's ticket model (TF-IDF + logistic regression) and for a random
forest of 50 trees on the wine data (median of repeated calls).

Part 2: the same random forest served four ways, each in its own server process with one
worker, one after the other in this one run: FastAPI with a `def` route (threadpool),
with an `async def` route (on the event loop), with step 11's `MicroBatcher`, all under
uvicorn; and Flask under gunicorn (one sync worker). The load generator (asyncio with
httpx2, in `--clients` processes of its own) keeps `--concurrency` requests in flight for
a fixed time and prints, per server, requests/s, p50 and p99 latency, the server's CPU,
requests per second of server CPU, and its own CPU (in cores, its processes together).
Read the ratios of one run, not absolute figures of another machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# One BLAS/OpenMP thread per process: every server then uses the cores the same way.
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Part 1: the cost split -------------------------------------------------------------


def per_call(predict, rows, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """The median seconds of one predict(rows) call over `repeats` calls."""
    predict(rows)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(rows)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cost_split(repeats: int) -> list[str]:
    sys.path.insert(0, str(HERE))
    from batching_model import sample_rows, train_forest

    from coursekit.models import load_model

    tickets = load_model("tickets").pipeline
    texts = [f"My order {n} arrived late and the invoice is wrong." for n in range(64)]
    forest = train_forest()
    wines = (sample_rows() * 2)[:64]
    lines = [f"{'model':36} {'1 row':>9} {'64 rows':>9} {'per row, 64':>12}"]
    for name, predict, rows in (
        ("tickets: TF-IDF + LogisticRegression", tickets.predict_proba, texts),
        ("wine: RandomForest(50 trees)", forest.predict_proba, wines),
    ):
        one = per_call(predict, rows[:1], repeats)
        many = per_call(predict, rows, repeats)
        lines.append(
            f"{name:36} {one * 1e3:7.2f} ms {many * 1e3:6.2f} ms {many / 64 * 1e6:8.0f} µs"
        )
    return lines


# --- Part 2: the servers ------------------------------------------------------------------


@dataclass
class Server:
    label: str
    kind: str  # "uvicorn" or "gunicorn"
    path: str  # the prediction route


SERVERS = [
    Server("FastAPI, def", "uvicorn", "/predict/def"),
    Server("FastAPI, async def", "uvicorn", "/predict/async"),
    Server("FastAPI, batched", "uvicorn", "/predict/batched"),
    Server("Flask + gunicorn", "gunicorn", "/predict"),
]


def command(kind: str, port: int) -> list[str]:
    """One worker each: uvicorn's asyncio loop, or gunicorn's default sync worker."""
    if kind == "uvicorn":
        return [
            *(sys.executable, "-m", "uvicorn", "batching_app:app", "--app-dir", str(HERE)),
            *("--port", str(port), "--log-level", "warning", "--no-access-log"),
        ]
    return [
        *(sys.executable, "-m", "gunicorn", "-w", "1", "--chdir", str(HERE)),
        *("-b", f"127.0.0.1:{port}", "--log-level", "warning", "batching_flask_app:app"),
    ]


@contextmanager
def running(server: Server, port: int) -> Iterator[psutil.Process]:
    """Start the server; yield its process once /health answers; stop it."""
    # No warnings on stderr: a forest called from many threads can warn once per tree.
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(command(server.kind, port), env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60  # a busy machine imports slowly
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{server.label} did not start") from None
                time.sleep(0.1)
        yield psutil.Process(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time of the server: its process and its children (gunicorn's worker)."""
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        try:
            times = each.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


@dataclass
class Result:
    requests_per_second: float
    p50: float
    p99: float
    errors: int
    server_cores: float
    client_cores: float

    @property
    def per_cpu_second(self) -> float:
        """Requests per second of the server's own CPU: what a shared machine distorts least."""
        return self.requests_per_second / self.server_cores if self.server_cores else 0.0


async def load(
    base_url: str, path: str, seconds: float, concurrency: int
) -> tuple[list[float], int, float]:
    """Keep `concurrency` requests in flight for `seconds`: latencies, errors, elapsed."""
    from batching_model import sample_rows

    rows = sample_rows()
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:

        async def worker(seed: int) -> None:
            nonlocal errors
            pick = random.Random(seed)
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                response = await http.post(path, json={"features": pick.choice(rows)})
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def load_process(
    base_url: str, path: str, seconds: float, concurrency: int
) -> tuple[list[float], int, float, float]:
    """One load-generator process: `load`, plus the CPU seconds this process spent on it."""
    sys.path.insert(0, str(HERE))
    cpu_before = time.process_time()
    latencies, errors, elapsed = asyncio.run(load(base_url, path, seconds, concurrency))
    return latencies, errors, elapsed, time.process_time() - cpu_before


def measure(server: Server, seconds: float, concurrency: int, clients: int) -> Result:
    """Load `server` from `clients` processes, `concurrency` requests in flight in all."""
    port = free_port()
    per_client = [concurrency // clients + (n < concurrency % clients) for n in range(clients)]
    with running(server, port) as process, ProcessPoolExecutor(clients) as pool:
        base_url = f"http://127.0.0.1:{port}"

        def run(duration: float) -> list[tuple[list[float], int, float, float]]:
            jobs = [
                pool.submit(load_process, base_url, server.path, duration, n) for n in per_client
            ]
            return [job.result() for job in jobs]

        run(0.5)  # warm-up (and the pool's processes start): not counted
        server_before = cpu_seconds(process)
        parts = run(seconds)
        server_cpu = cpu_seconds(process) - server_before
    latencies = [latency for part in parts for latency in part[0]]
    elapsed = max(part[2] for part in parts)
    ordered = sorted(latencies) or [float("nan")]
    return Result(
        requests_per_second=len(latencies) / elapsed,
        p50=ordered[int(0.50 * (len(ordered) - 1))],
        p99=ordered[int(0.99 * (len(ordered) - 1))],
        errors=sum(part[1] for part in parts),
        server_cores=server_cpu / elapsed,
        client_cores=sum(part[3] for part in parts) / elapsed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per server instead of 8 s")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument(
        "--clients", type=int, default=2, help="load-generator processes (sharing the requests)"
    )
    args = parser.parse_args()
    seconds = 2.0 if args.quick else 8.0
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    load_before = os.getloadavg()[0]

    print("Part 1: one predict_proba call (median of 200 calls, this process, one thread)")
    for line in cost_split(repeats=200 if args.quick else 500):
        print("  " + line)

    print()
    print(
        f"Part 2: RandomForest(50) served four ways, one worker each, {args.concurrency}"
        f" requests in flight from {args.clients} load-generator processes, {seconds:g} s each"
    )
    print(
        f"  {'server':20} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
        f" {'server CPU':>10} {'req/CPU-s':>9} {'loadgen CPU':>11}"
    )
    results: dict[str, Result] = {}
    for server in SERVERS:
        result = measure(server, seconds, args.concurrency, args.clients)
        results[server.label] = result
        print(
            f"  {server.label:20} {result.requests_per_second:7.0f} {result.p50 * 1e3:7.1f}"
            f" {result.p99 * 1e3:7.1f} {result.errors:6d} {result.server_cores:10.2f}"
            f" {result.per_cpu_second:9.0f} {result.client_cores:11.2f}"
        )

    print()
    print(f"  {'ratio':42} {'req/s':>6} {'req/CPU-s':>10}")
    pairs = [("FastAPI, batched", other) for other in ("FastAPI, def", "FastAPI, async def")]
    pairs += [("FastAPI, batched", "Flask + gunicorn"), ("FastAPI, def", "Flask + gunicorn")]
    pairs += [("FastAPI, async def", "Flask + gunicorn")]
    for top, bottom in pairs:
        a, b = results[top], results[bottom]
        print(
            f"  {top + ' / ' + bottom:42} {a.requests_per_second / b.requests_per_second:5.1f}x"
            f" {a.per_cpu_second / b.per_cpu_second:9.1f}x"
        )
    print()
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average"
        f" {load_before:.1f} before and {os.getloadavg()[0]:.1f} after;"
        f" run in {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
