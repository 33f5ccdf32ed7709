"""The grader's own record of one run of a learner's test suite (step 12).

Loaded with `-p suite_report` into the subprocess that runs the suite. It writes, at
the end of the session, what pytest itself saw: each test's outcome, the collection
errors and the exit status. The grader decides from this file and the exit code,
never from anything the suite prints or returns. The report's path is taken out of the
environment at once, so the suite under test does not find it there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPORT = Path(os.environ.pop("AUTOGRADER_SUITE_REPORT", "suite-report.json"))
outcomes: dict[str, str] = {}  # test id -> passed, failed, skipped, xfailed, xpassed
collect_errors: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    previous = outcomes.get(report.nodeid)
    if report.failed:
        outcomes[report.nodeid] = "failed"  # in any phase: setup, call or teardown
    elif previous == "failed":
        return
    elif report.skipped:
        outcomes[report.nodeid] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
    elif report.when == "call":
        outcomes[report.nodeid] = "xpassed" if hasattr(report, "wasxfail") else "passed"


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        collect_errors.append(report.nodeid or "(the session)")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    record = {"tests": outcomes, "collect_errors": collect_errors, "exitstatus": int(exitstatus)}
    partial = REPORT.with_suffix(".partial")
    partial.write_text(json.dumps(record), encoding="utf-8")
    partial.replace(REPORT)
