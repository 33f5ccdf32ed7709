"""What a submission's code may see when an instructor grades it (`--source-root`).

A learner grading their own work runs their own code: nothing to hide from it. An
instructor grading a class runs code they did not write, so its process gets only the
environment a Python program needs (no tokens, no keys, no instructor's home) and a
scratch home of its own. This is one layer of the trust model in docs/instructors.md,
not all of it: the submission still runs as the instructor's user.

Its processes also get resource limits (Linux and macOS; Windows has no such call):
no core files, no file above 1 GiB, 15 minutes of CPU, a bounded number of processes
(Linux), and on Linux a bounded address space, so a submission that allocates without
end or forks without end fails with an error instead of taking the machine down.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

# Names a child needs to run Python and the course, on Linux, macOS and Windows.
KEPT = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONUTF8",
    "SYSTEMROOT",  # Windows: the C runtime and sockets need it
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
    "NUMBER_OF_PROCESSORS",
    "PROCESSOR_ARCHITECTURE",
    "COURSE_REDIS_URL",  # the task-queue steps' server where none ships (Windows)
)
# The grader's own settings, read by the child or the course's runtime.
KEPT_PREFIXES = ("AUTOGRADER_", "COURSEKIT_")


GIB = 1 << 30
# A grading child's address space peaks at 1.6 GiB on a 2-core machine (step 11, whose
# thread pools reserve stacks; measured with VmPeak over every step's solution), and
# thread pools grow with the cores: 4 GiB plus a quarter per core leaves room for both.
ADDRESS_SPACE = 4 * GIB
ADDRESS_SPACE_PER_CPU = GIB // 4
FILE_SIZE = GIB
CPU_SECONDS = 900
MORE_PROCESSES = 256  # than the user runs already: RLIMIT_NPROC counts all of theirs


def limits() -> dict[str, int]:
    """The resource limits of a submission's processes, by `resource` name (POSIX only)."""
    if os.name == "nt":
        return {}
    chosen = {"RLIMIT_CORE": 0, "RLIMIT_FSIZE": FILE_SIZE, "RLIMIT_CPU": CPU_SECONDS}
    if sys.platform.startswith("linux"):
        chosen["RLIMIT_AS"] = ADDRESS_SPACE + ADDRESS_SPACE_PER_CPU * (os.cpu_count() or 1)
        chosen["RLIMIT_NPROC"] = _processes_of_this_user() + MORE_PROCESSES
    return chosen


def apply_limits(chosen: Mapping[str, int]) -> None:
    """Lower this process's limits to `chosen` (never raise one: a lower one stays)."""
    import resource

    for name, value in chosen.items():
        number = getattr(resource, name, None)
        if number is None:
            continue
        soft, hard = resource.getrlimit(number)
        wanted = value if hard == resource.RLIM_INFINITY else min(value, hard)
        if soft != resource.RLIM_INFINITY and soft <= wanted:
            continue
        try:
            resource.setrlimit(number, (wanted, hard))
        except (ValueError, OSError):  # a system that refuses this limit: keep going
            continue


def _processes_of_this_user() -> int:
    uid = str(os.getuid())
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    count += line.split()[1] == uid
                    break
        except OSError:
            continue
    return count


def environment(base: Mapping[str, str], home: Path) -> dict[str, str]:
    """`base` cut down to what a child needs, with `home` as its home and temporary folder."""
    home.mkdir(parents=True, exist_ok=True)
    kept = {
        name: value
        for name, value in base.items()
        if name in KEPT or name.startswith(KEPT_PREFIXES)
    }
    scratch = str(home)
    kept.update(HOME=scratch, USERPROFILE=scratch, TMPDIR=scratch, TEMP=scratch, TMP=scratch)
    if os.name == "nt":
        kept.update(APPDATA=scratch, LOCALAPPDATA=scratch)
    return kept


def refuse_debuggers() -> bool:
    """Keep other processes of this user out of this one (Linux); whether it worked.

    A process that is not "dumpable" cannot be traced by another process of the same
    user (only by one with CAP_SYS_PTRACE, such as root's), and its /proc files
    (`mem`, `environ`) belong to root: a submission's process cannot read or rewrite
    the memory of the grading process that runs the tests over HTTP (autograder.remote).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3  # from <linux/prctl.h>
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return (
            libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
            and libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0
        )
    except (OSError, AttributeError):
        return False
