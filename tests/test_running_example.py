"""Shared files cannot drift: a file shipped ready-made is the same byte for byte everywhere.

Steps 02 to 05 extend one service. Step 02 writes its request and response schemas;
later steps ship them ready-made, unchanged, in both their exercise and their solution.
A later step adds itself to `SHARED_FILES` with the files it must keep identical. Files
given to the learner that are not Python modules (the `given` check in test_catalog.py
covers those) are listed here too, such as step 08's chat page.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ROOT

# Each file, as written by the step that owns it, and the copies that must equal it.
SHARED_FILES: dict[str, list[str]] = {
    "solutions/02_validation/schemas.py": [
        "exercises/03_serving_model/schemas.py",
        "solutions/03_serving_model/schemas.py",
        "exercises/04_errors/schemas.py",
        "solutions/04_errors/schemas.py",
        "exercises/05_dependency_injection/schemas.py",
        "solutions/05_dependency_injection/schemas.py",
    ],
    "solutions/08_streaming_sse/chat.html": ["exercises/08_streaming_sse/chat.html"],
}


@pytest.mark.parametrize(
    ("original", "copy"),
    [(original, copy) for original, copies in SHARED_FILES.items() for copy in copies],
)
def test_the_copy_is_byte_identical(original: str, copy: str) -> None:
    source, target = ROOT / original, ROOT / copy
    assert target.read_bytes() == source.read_bytes(), (
        f"{copy} differs from {original}: the running example drifted. Change the schemas "
        f"in {original} first, then copy it: cp {original} {copy}"
    )


def test_every_listed_file_exists() -> None:
    paths = [Path(p) for original, copies in SHARED_FILES.items() for p in (original, *copies)]
    missing = [str(path) for path in paths if not (ROOT / path).is_file()]
    assert not missing, f"listed in SHARED_FILES but missing: {missing}"
