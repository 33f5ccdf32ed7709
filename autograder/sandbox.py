"""What a submission's code may see when an instructor grades it (`--source-root`).

A learner grading their own work runs their own code: nothing to hide from it. An
instructor grading a class runs code they did not write, so its process gets only the
environment a Python program needs (no tokens, no keys, no instructor's home) and a
scratch home of its own. This is one layer of the trust model in docs/instructors.md,
not all of it: the submission still runs as the instructor's user.
"""

from __future__ import annotations

import os
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
