"""Recognise a step the learner has not started: its files are still the stubs.

`pristine.json` beside this file holds, per step, a fingerprint of the stub files the
learner edits, as shipped. A step whose files still match scores zero for the obvious
reason, so the report says so in one line instead of listing every failing test. The
course's own checks keep the file current: after changing a stub, run

    python -m autograder pristine --update
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from autograder.catalog import Step, load_catalog

PRISTINE_FILE = Path(__file__).with_name("pristine.json")


def fingerprint(step: Step, folder: Path) -> str:
    """A hash of the step's editable modules in `folder` (line endings ignored)."""
    digest = hashlib.sha256()
    for module in step.modules:
        if module in step.given:
            continue
        path = folder / f"{module}.py"
        try:
            text = path.read_bytes().replace(b"\r\n", b"\n")
        except OSError:
            text = b"(missing)"
        digest.update(module.encode() + b"\0" + text + b"\0")
    return digest.hexdigest()


def stub_fingerprints() -> dict[str, str]:
    """What `pristine.json` should hold: the fingerprint of each step's shipped stubs."""
    return {step.id: fingerprint(step, step.exercise_dir) for step in load_catalog().steps}


def is_untouched(step: Step, folder: Path) -> bool:
    """True when `folder` holds the step's stubs exactly as the course ships them."""
    try:
        recorded = json.loads(PRISTINE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded.get(step.id) == fingerprint(step, folder)


def update() -> None:
    """Rewrite `pristine.json` from the stubs in exercises/."""
    PRISTINE_FILE.write_text(json.dumps(stub_fingerprints(), indent=2) + "\n", encoding="utf-8")
