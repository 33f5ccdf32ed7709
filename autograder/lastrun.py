"""The last grading of each step, kept so `hint` and `next` answer at once.

After every run, each graded step's records are saved in `.autograder/last-run.json`
with a key: a hash of the graded folder's files, the step's tests and the catalog. A
later `python -m autograder hint NN` or `next` reuses a step's records while that key
still matches (nothing was edited since), and grades the step again otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from autograder.catalog import CATALOG_FILE, ROOT, Step
from autograder.records import Record

LAST_RUN_FILE = ROOT / ".autograder" / "last-run.json"


def key(step: Step, source: Path) -> str:
    """What the step's grade depends on: its files, its tests and the catalog."""
    digest = hashlib.sha256(str(source.resolve()).encode())
    files = sorted(source.glob("*.py")) + sorted(step.exercise_dir.glob("test_*.py"))
    for path in [*files, CATALOG_FILE]:
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:
            digest.update(path.name.encode() + b"\0(missing)\0")
    return digest.hexdigest()


def _load() -> dict[str, dict[str, object]]:
    try:
        return json.loads(LAST_RUN_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def recall(step: Step, source: Path) -> list[Record] | None:
    """The step's records from the last run, if nothing it depends on changed since."""
    saved = _load().get(step.id)
    if not saved or saved.get("key") != key(step, source):
        return None
    try:
        records = [Record.from_dict(data) for data in saved["records"]]  # type: ignore[union-attr]
    except (TypeError, KeyError):
        return None
    # A run of only some tests (-k, a node id) does not stand for the whole step.
    return records if {r.test for r in records} == {t.name for t in step.tests} else None


def remember(step: Step, source: Path, records: list[Record]) -> None:
    """Save the step's records with their key; never fails the grading run."""
    try:
        saved = _load()
        saved[step.id] = {"key": key(step, source), "records": [r.to_dict() for r in records]}
        LAST_RUN_FILE.parent.mkdir(exist_ok=True)
        temporary = LAST_RUN_FILE.with_suffix(".tmp")
        temporary.write_text(json.dumps(saved), encoding="utf-8")
        temporary.replace(LAST_RUN_FILE)
    except OSError:
        pass


def duration(step: Step) -> float:
    """Seconds the step's tests took in the last saved run, whatever changed since."""
    saved = _load().get(step.id) or {}
    records = saved.get("records") or []
    return float(sum(record.get("duration", 0.0) for record in records))  # type: ignore[union-attr]
