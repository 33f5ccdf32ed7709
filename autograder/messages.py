"""Turn what went wrong into one plain sentence for a learner, never a traceback."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType, TracebackType

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


@dataclass(frozen=True)
class Explanation:
    """Why a test failed: its outcome, a sentence for the learner, and the symptom it
    shares with other failures, if any (see `autograder.expect.Mismatch`)."""

    outcome: Outcome
    message: str
    symptom: str = ""
    # The failure is a wait that ran out (see `autograder.expect.OutOfTime`): the grader
    # runs the test again on its own before it counts.
    waited: bool = False


# Timeouts of the clients the tests use (httpx's base class, openai's), by class name so
# that this module imports neither; TimeoutError covers Future.result and asyncio.
TIMEOUT_CLASSES = frozenset({"TimeoutException", "APITimeoutError", "OutOfTime"})


def explain_test_failure(
    exc: BaseException,
    source: Path,
    given: Collection[str] = (),
    server_errors: Sequence[BaseException] = (),
) -> Explanation:
    """Why a test failed, saying where to look.

    `given` names the step's modules the learner does not edit: an error raised there
    is traced to the learner's part it stems from. `server_errors` are the exceptions
    the app raised while the test ran: a test that saw only "answered 500" is told
    which line of the learner's code raised.
    """
    explanation = _explain(exc, source, given, server_errors)
    if any(ran_out_of_time(error) for error in (exc, *server_errors)):
        return replace(explanation, waited=True)
    return explanation


def caused_by(cause: Explanation, seen: str) -> Explanation:
    """A failed expectation told with its cause: the app's own exception comes first,
    then what the test saw of it (an "answered 500")."""
    return Explanation(
        cause.outcome, f"{cause.message} The test saw: {seen}", cause.symptom or cause.message
    )


def ran_out_of_time(exc: BaseException) -> bool:
    """Whether a wait ran out anywhere in `exc`, its causes or the group it is in."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, TimeoutError) or any(
            kind.__name__ in TIMEOUT_CLASSES for kind in type(error).__mro__
        ):
            return True
        if isinstance(error, BaseExceptionGroup):
            stack.extend(error.exceptions)
        stack.extend(e for e in (error.__cause__, error.__context__) if e is not None)
    return False


def _explain(
    exc: BaseException,
    source: Path,
    given: Collection[str],
    server_errors: Sequence[BaseException],
) -> Explanation:
    # Streaming responses run the learner's generator in a task group, which wraps its
    # error; the one exception inside is what the learner needs to see.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, AssertionError):
        text = str(exc)
        # pytest appends its own rendering of a plain `assert` after our message.
        text = text.split("\nassert ", 1)[0].strip()
        text = text or "An expectation of this test was not met."
        for server_error in server_errors:
            cause = explain_test_failure(server_error, source, given)
            if not cause.message.startswith("The test stopped on"):
                return caused_by(cause, text)
        return Explanation("failed", text, getattr(exc, "symptom", ""))
    frame = _learner_frame(exc.__traceback__, source)
    where = f"{show_path(frame.filename)}, line {frame.lineno}, in {frame.name}()" if frame else ""
    if isinstance(exc, NotImplementedError) and frame:
        message = f"Not done yet: {where} still raises NotImplementedError."
        return Explanation("not_implemented", message, message)
    detail = _shorten(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if frame and Path(frame.filename).stem in given:
        unwritten = _unwritten_part(exc, source, given)
        if unwritten:
            message = (
                f"Not done yet: {unwritten} (the given code at {where} uses it, and "
                f"raised {detail})."
            )
            return Explanation("not_implemented", message, message)
        return Explanation(
            "error",
            f"The given code at {where} raised {detail}. You do not edit that file: the "
            "cause is in what your modules give it.",
        )
    if frame:
        return Explanation("error", f"Your code raised {detail} at {where}.")
    return Explanation("error", f"The test stopped on {detail}.")


def _unwritten_part(exc: BaseException, source: Path, given: Collection[str]) -> str:
    """`TicketRequest in schemas.py has no `text` yet`: the learner's part an error in
    given code stems from, when an attribute of the learner's own class is missing."""
    if not isinstance(exc, AttributeError) or exc.name is None or exc.obj is None:
        return ""
    owner = exc.obj if isinstance(exc.obj, type | ModuleType) else type(exc.obj)
    module = owner if isinstance(owner, ModuleType) else sys.modules.get(owner.__module__)
    file = getattr(module, "__file__", None)
    if not file or Path(file).parent.resolve() != source or Path(file).stem in given:
        return ""
    if isinstance(owner, ModuleType):
        return f"{show_path(file)} has no `{exc.name}` yet"
    return f"{owner.__name__} in {show_path(file)} has no `{exc.name}` yet"


def crashed_message(code: int | None) -> str:
    """What a test says when the process serving the learner's app stopped during it."""
    return (
        f"The grading process stopped during this test (exit code {code}). Does your "
        "code call sys.exit() or os._exit()? A server must never exit while answering "
        "a request."
    )


def missing_app(module_name: str, attribute: str) -> str:
    """What a test says when the step's module has no app where the catalog says."""
    return (
        f"{module_name}.py must define `{attribute}` (the FastAPI application); "
        "it is missing. Did you rename or delete it?"
    )


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
