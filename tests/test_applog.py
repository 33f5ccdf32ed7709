"""The grader's `app_log`: what the app logged, the same in either mode, read safely.

The graded tests that use it (step 08's "a model failure is logged") are proven in both
modes by the known-wrong implementation that logs nothing; these check the pieces.
"""

from __future__ import annotations

import logging
import os

import pytest
import uvicorn

from autograder.applog import LogLine, collecting, parse


def log_from(path: str, name: str, level: int, message: str) -> None:
    """Log as code in the file `path` would (a record's pathname is its caller's file)."""
    logger = logging.getLogger(name)
    record = logger.makeRecord(name, level, path, 1, message, (), None)
    logger.handle(record)


def test_the_apps_records_at_warning_or_above_are_collected_in_order() -> None:
    lines: list[LogLine] = []
    with collecting(lines.append):
        logging.getLogger("registry").info("loaded %s", "wine")  # below WARNING
        logging.getLogger("registry").warning("could not load %s", "wine")
        logging.getLogger("app").error("the model failed after %d tokens", 2)
    logging.getLogger("app").error("after the block")
    assert lines == [
        LogLine(logging.WARNING, "registry", "could not load wine"),
        LogLine(logging.ERROR, "app", "the model failed after 2 tokens"),
    ]


def test_what_uvicorns_own_code_logs_is_left_out() -> None:
    # Told by the file that logged, not the logger's name: an app that configures logging
    # its own way can make uvicorn's records reach the root logger under any name.
    uvicorns = os.path.join(os.path.dirname(uvicorn.__file__), "protocols", "http", "h11_impl.py")
    lines: list[LogLine] = []
    with collecting(lines.append):
        log_from(uvicorns, "app", logging.ERROR, "Exception in ASGI application")
        log_from("/course/app.py", "app", logging.ERROR, "the model failed")
    assert lines == [LogLine(logging.ERROR, "app", "the model failed")]


def test_the_root_loggers_level_is_put_back() -> None:
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.CRITICAL)
    try:
        lines: list[LogLine] = []
        with collecting(lines.append):
            logging.getLogger("app").warning("seen")
        assert lines and root.level == logging.CRITICAL
    finally:
        root.setLevel(before)


@pytest.mark.parametrize(
    "data",
    [
        None,
        "WARNING: the model failed",
        [30, "app", "message"],
        {"level": True, "logger": "app", "message": "a bool is not a level"},
        {"level": "30", "logger": "app", "message": "a text is not a level"},
        {"level": 30.0, "logger": "app", "message": "a float is not a level"},
        {"level": 30, "logger": None, "message": "no logger"},
        {"level": 30, "logger": "app", "message": {"nested": 1}},
        {"level": 30, "logger": "app"},
    ],
)
def test_a_report_line_that_is_not_a_log_record_is_dropped(data: object) -> None:
    assert parse(data) is None


def test_a_reported_record_is_read_and_cut_to_size() -> None:
    line = parse({"level": 40, "logger": "app", "message": "x" * 5000, "extra": 1})
    assert line is not None
    assert (line.level, line.logger, len(line.message)) == (40, "app", 1000)
