"""Turn what went wrong into one plain sentence for a learner, never a traceback."""

from __future__ import annotations

import traceback
from pathlib import Path
from types import TracebackType

from autograder.catalog import ROOT
from autograder.records import Outcome

MAX_DETAIL = 300  # characters of an exception's own text worth showing


def show_path(path: str | Path) -> str:
    """`path` relative to the repository, with forward slashes on every platform."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(ROOT).as_posix()
    except ValueError:
        return resolved.as_posix()


def _shorten(text: str, limit: int = MAX_DETAIL) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _learner_frame(tb: TracebackType | None, source: Path) -> traceback.FrameSummary | None:
    """The innermost frame of the traceback that runs a file in the learner's folder."""
    found = None
    for frame in traceback.extract_tb(tb):
        try:
            Path(frame.filename).resolve().relative_to(source)
        except ValueError:
            continue
        found = frame
    return found


def explain_test_failure(exc: BaseException, source: Path) -> tuple[Outcome, str]:
    """Why a test failed: its outcome and a sentence that says where to look."""
    # Streaming responses run the learner's generator in a task group, which wraps its
    # error; the one exception inside is what the learner needs to see.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, AssertionError):
        text = str(exc)
        # pytest appends its own rendering of a plain `assert` after our message.
        text = text.split("\nassert ", 1)[0].strip()
        return "failed", text or "An expectation of this test was not met."
    frame = _learner_frame(exc.__traceback__, source)
    where = f"{show_path(frame.filename)}, line {frame.lineno}, in {frame.name}()" if frame else ""
    if isinstance(exc, NotImplementedError) and frame:
        return "not_implemented", f"Not done yet: {where} still raises NotImplementedError."
    detail = _shorten(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if frame:
        return "error", f"Your code raised {detail} at {where}."
    return "error", f"The test stopped on {detail}."


def explain_import_failure(exc: BaseException, module_file: Path, source: Path) -> str:
    """Why the learner's module could not be imported, in one sentence."""
    shown = show_path(module_file)
    if isinstance(exc, SyntaxError):
        where = f"{show_path(exc.filename or module_file)}, line {exc.lineno}"
        return (
            f"Python cannot read {where}: {exc.msg}. "
            "Fix that line (or the one just before it) and grade again."
        )
    frame = _learner_frame(exc.__traceback__, source)
    where = f" (line {frame.lineno} of {show_path(frame.filename)})" if frame else ""
    if isinstance(exc, SystemExit):
        return f"Importing {shown} called sys.exit(){where}; a module must not exit when imported."
    if isinstance(exc, ModuleNotFoundError):
        return (
            f"Importing {shown} failed: no module named {exc.name!r}{where}. "
            "Check the spelling of the import."
        )
    detail = _shorten(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return f"Importing {shown} raised {detail}{where}."
