"""How long grading takes: wall and CPU time per step and for the whole course.

    python benchmarks/grading.py             # min and median of 3 runs of each command
    python benchmarks/grading.py --runs 5
    python benchmarks/grading.py --load 4    # the same, with 4 busy processes beside it

Each measured command is what a learner types, run from the repository root:
`python -m pytest exercises/ --solutions`, the same on the pristine stubs, one step at
a time, and `python -m autograder next` / `hint 01`. Each is measured twice:
- cold: a warm process for that run only (AUTOGRADER_SHARED_WARM=0), as on a learner's
  first run, on CI, or in the instructor's mode;
- warm: the warm process a previous run left (started once, before the measured runs),
  as on every later run of a learner's edit-and-grade loop.
CPU time counts every process the command used: its own children (waited for) and, in
the warm mode, what the shared warm process and its children spent meanwhile (read
from /proc: Linux only; elsewhere the warm CPU column reads n/a). Unix only for CPU.

The machine's load is printed before and after: on a shared machine, compare the rows
of one run with each other rather than with another day's figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autograder.catalog import load_catalog  # noqa: E402
from autograder.processes import _socket_path  # noqa: E402

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]


def warm_process_cpu() -> float | None:
    """CPU seconds the shared warm process and its reaped children have used so far."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(_socket_path(shared=True))
            pid = json.loads(connection.makefile("rb").readline())["ready"]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), in clock ticks.
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def measure(command: list[str], env: dict[str, str], warm: bool) -> tuple[float, float | None]:
    """Run `command` once; its wall time and CPU time (None where it cannot be read)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN) if resource else None
    warm_before = warm_process_cpu() if warm else 0.0
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - started
    warm_after = warm_process_cpu() if warm else 0.0
    if not (resource and before) or warm_before is None or warm_after is None:
        return wall, None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, own + (warm_after - warm_before)


def burn(seconds: float) -> None:
    """One busy process, bounded in time, in a session of its own (another program)."""
    if hasattr(os, "setsid"):
        os.setsid()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(10_000))


def load_text() -> str:
    if hasattr(os, "getloadavg"):
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return "load average n/a"


def row(label: str, results: list[tuple[float, float | None]]) -> str:
    walls = [wall for wall, _ in results]
    cpus = [cpu for _, cpu in results if cpu is not None]
    cpu = f"{min(cpus):8.2f} {statistics.median(cpus):8.2f}" if cpus else f"{'n/a':>8} {'n/a':>8}"
    return f"{label:34} {min(walls):9.2f} {statistics.median(walls):9.2f} {cpu}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="busy processes to run beside")
    args = parser.parse_args()

    python = sys.executable
    pytest = [python, "-m", "pytest"]
    commands: list[tuple[str, list[str]]] = [
        ("course, solutions", [*pytest, "exercises/", "--solutions"]),
        ("course, stubs", [*pytest, "exercises/"]),
    ]
    for step in load_catalog().steps:
        commands.append(
            (f"step {step.id}, solution", [*pytest, f"exercises/{step.slug}", "--solutions"])
        )
    commands += [
        ("autograder next", [python, "-m", "autograder", "next"]),
        ("autograder hint 01", [python, "-m", "autograder", "hint", "01"]),
    ]
    cold_env = {**os.environ, "AUTOGRADER_SHARED_WARM": "0"}
    warm_env = {**os.environ, "AUTOGRADER_SHARED_WARM": "1"}

    burners = [
        multiprocessing.Process(target=burn, args=(3600,), daemon=True) for _ in range(args.load)
    ]
    for burner in burners:
        burner.start()
    print(
        f"{sys.platform}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{args.load} busy processes beside; before: {load_text()}"
    )
    print(f"{'command':34} {'wall min':>9} {'wall med':>9} {'CPU min':>8} {'CPU med':>8}")
    try:
        subprocess.run(commands[0][1], cwd=ROOT, env=warm_env, capture_output=True, check=False)
        for label, command in commands:
            cold = [measure(command, cold_env, warm=False) for _ in range(args.runs)]
            print(row(f"{label} (cold)", cold), flush=True)
            warm = [measure(command, warm_env, warm=True) for _ in range(args.runs)]
            print(row(f"{label} (warm)", warm), flush=True)
    finally:
        for burner in burners:
            burner.terminate()
    print(f"after: {load_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
