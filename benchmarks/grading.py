"""How long grading takes: wall and CPU time per step and for the whole course.

    python benchmarks/grading.py             # min and median of 3 runs of each command
    python benchmarks/grading.py --runs 5
    python benchmarks/grading.py --load 4    # the same, with 4 busy processes beside it

Each measured command is what a learner types, run from the repository root:
`python -m pytest exercises/ --solutions`, the same on the pristine stubs, one step at
a time, and `python -m autograder next` / `hint 01`. CPU time counts every process the
command started and waited for (the warm process and every grading child included), so
it is what the command cost the machine. Unix only for CPU (`resource`); on Windows the
CPU column reads n/a.

The machine's load is printed before and after: on a shared machine, compare the rows
of one run with each other rather than with another day's figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autograder.catalog import load_catalog  # noqa: E402

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]


def measure(command: list[str]) -> tuple[float, float | None, int]:
    """Run `command` once; its wall time, CPU time (children included) and exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN) if resource else None
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
    wall = time.perf_counter() - started
    cpu = None
    if resource and before:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, completed.returncode


def burn(seconds: float) -> None:
    """One busy process, bounded in time: the load of a learner's other programs."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(10_000))


def load_text() -> str:
    if hasattr(os, "getloadavg"):
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return "load average n/a"


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

    burners = [
        multiprocessing.Process(target=burn, args=(3600,), daemon=True) for _ in range(args.load)
    ]
    for burner in burners:
        burner.start()
    print(
        f"{sys.platform}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{args.load} busy processes beside; before: {load_text()}"
    )
    print(f"{'command':28} {'wall min':>9} {'wall med':>9} {'CPU min':>8} {'CPU med':>8}  exit")
    try:
        for label, command in commands:
            results = [measure(command) for _ in range(args.runs)]
            walls = [wall for wall, _, _ in results]
            cpus = [cpu for _, cpu, _ in results if cpu is not None]
            codes = sorted({code for _, _, code in results})
            cpu_text = (
                f"{min(cpus):8.2f} {statistics.median(cpus):8.2f}"
                if cpus
                else f"{'n/a':>8} {'n/a':>8}"
            )
            print(
                f"{label:28} {min(walls):9.2f} {statistics.median(walls):9.2f} {cpu_text}  "
                f"{','.join(map(str, codes))}",
                flush=True,
            )
    finally:
        for burner in burners:
            burner.terminate()
    print(f"after: {load_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
