"""The grader's own files, kept as they were while a submission is graded (`--source-root`).

A submission runs as the instructor's user, so it can write where the grader lives:
rewrite a graded test, drop a `conftest.py` beside the tests, replace a built model.
Such a change would raise its own grade (the parent imports some modules late) and
every later student's graded from the same checkout. So, before the first child starts,
the grader reads every file a grade depends on; after the last one has been killed it
compares, puts back what changed, removes what was added, and the run that changed
anything scores zero. An honest submission never writes there.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from autograder.catalog import GRADING_REFERENCES, ROOT

# What decides a grade: the grader, the course's runtime, the graded tests and the given
# modules beside them, the catalog, step 15's reference service (the learner's suite is
# graded on it). Data and notebooks are not imported while grading.
GUARDED = ("autograder", "coursekit", "exercises", *GRADING_REFERENCES)
GUARDED_FILES = ("course.toml", "pyproject.toml")
SUFFIXES = (".py", ".toml", ".json", ".ini", ".cfg", ".pth", ".csv", ".txt", ".skops")
SKIPPED = ("__pycache__",)


@dataclass(frozen=True)
class Snapshot:
    root: Path
    folders: tuple[Path, ...]  # walked for guarded files
    files: dict[Path, bytes]  # each guarded file -> its content

    def changes(self) -> list[Path]:
        """Files changed, removed or added since the snapshot, sorted."""
        now = _guarded_paths(self.root, self.folders)
        changed = [
            path
            for path, content in self.files.items()
            if path not in now or _read(path) != content
        ]
        added = [path for path in now if path not in self.files]
        return sorted({*changed, *added})

    def restore(self, paths: list[Path]) -> None:
        """Put `paths` back as they were (a file that was not there is removed)."""
        for path in paths:
            if path.is_symlink() or path.exists():
                path.unlink()
            if path in self.files:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.files[path])


def snapshot(root: Path = ROOT, extra: tuple[Path, ...] = ()) -> Snapshot:
    """The guarded files of the course at `root`, and every file below each of `extra`."""
    folders = (*(root / top for top in GUARDED), *extra)
    files = _guarded_paths(root, folders)
    return Snapshot(root, folders, {path: _read(path) for path in files})


def _guarded_paths(root: Path, folders: tuple[Path, ...]) -> set[Path]:
    paths = {path for path in (root / name for name in GUARDED_FILES) if path.is_file()}
    for top in folders:
        for folder, directories, files in os.walk(top):
            directories[:] = [name for name in directories if name not in SKIPPED]
            for name in files:
                if name.endswith(SUFFIXES):
                    paths.add(Path(folder) / name)
    return paths


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # removed, or made unreadable: either way not what it was
        return b""


def fingerprint(snapshot: Snapshot) -> str:
    """One digest of every guarded file (for a report or a log)."""
    digest = hashlib.sha256()
    for path in sorted(snapshot.files):
        digest.update(str(path).encode() + b"\0" + snapshot.files[path])
    return digest.hexdigest()[:16]
