"""What the app logged during a test: the grader's `app_log` fixture, in either mode.

A test that checks an app logs a failure reads `app_log()`: the records the app's own
loggers emitted at WARNING or above since the test began, in order, each a `LogLine`.
What uvicorn's own code logs is left out (it logs an exception that escapes the app, and
an app that logs nothing gets no credit for that), however logging is configured; as
with pytest's caplog, a record reaches `app_log` only through the root logger (uvicorn's
own loggers do not pass theirs on).

In a learner's run the app runs in the grading child, and `collecting` gathers its
records there. In an instructor's run it runs in a process of its own
(`autograder.appserver`), which sends each record to the grader as a line of its report;
`parse` reads that line as untrusted input.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

LEVEL = logging.WARNING
MAX_MESSAGE = 1000  # characters kept of a message


class LogLine(NamedTuple):
    level: int  # logging's number: 30 for WARNING, 40 for ERROR
    logger: str
    message: str


@functools.cache
def _uvicorn_folder() -> str:
    spec = importlib.util.find_spec("uvicorn")
    locations = spec.submodule_search_locations if spec else None
    return os.path.join(os.path.realpath(locations[0]), "") if locations else "\0"


def _uvicorns(path: str) -> bool:
    """Whether a record was logged by uvicorn's own code."""
    return os.path.realpath(path).startswith(_uvicorn_folder())


class _Collector(logging.Handler):
    def __init__(self, sink: Callable[[LogLine], None]) -> None:
        super().__init__(LEVEL)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if _uvicorns(record.pathname):
            return
        try:
            message = record.getMessage()
        except Exception:  # a message whose arguments do not fit its format
            message = str(record.msg)
        self.sink(LogLine(record.levelno, record.name, message[:MAX_MESSAGE]))


@contextlib.contextmanager
def collecting(sink: Callable[[LogLine], None]) -> Iterator[None]:
    """Send `sink` each record the app logs at WARNING or above, until the block ends.

    On the root logger, as pytest's caplog does: a module's logger reaches it unless the
    app stops its records from propagating. The root's level is lowered to WARNING for
    the block if it was above.
    """
    root = logging.getLogger()
    handler = _Collector(sink)
    level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > LEVEL:
        root.setLevel(LEVEL)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def as_data(line: LogLine) -> dict[str, Any]:
    return line._asdict()


def parse(data: object) -> LogLine | None:
    """The LogLine an app's process reported, or None if `data` is not one."""
    if not isinstance(data, dict):
        return None
    level, logger, message = data.get("level"), data.get("logger"), data.get("message")
    if type(level) is not int or not isinstance(logger, str) or not isinstance(message, str):
        return None
    return LogLine(level, logger[:MAX_MESSAGE], message[:MAX_MESSAGE])
