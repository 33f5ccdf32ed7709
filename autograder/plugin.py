"""The pytest side of the grader, activated by `exercises/conftest.py`.

`pytest exercises/` (or one step's folder, or one test) does not collect the tests in
this process: it hands each selected step to the engine, which grades it in a child
process, then prints the report. Inside such a child (`AUTOGRADER_CHILD` is set), the
child plugin runs the tests instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from autograder.catalog import ROOT, Step, load_catalog
from autograder.child import ENV_VAR, ChildPlugin, Job


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autograder", "course grader")
    group.addoption(
        "--solutions",
        action="store_true",
        help="grade the reference solutions (solutions/) instead of your exercises",
    )
    group.addoption(
        "--json",
        metavar="PATH",
        dest="autograder_json",
        help="also write the results to PATH (Gradescope's results.json, or see --format)",
    )
    group.addoption(
        "--format",
        dest="autograder_format",
        choices=("gradescope", "classroom", "exercism"),
        default="gradescope",
        help="the format --json writes: gradescope (default), classroom or exercism (v3)",
    )
    group.addoption(
        "--test-timeout",
        type=float,
        dest="autograder_test_timeout",
        help="seconds a test may run before it counts as hanging (default: per step)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(ENV_VAR):
        config.pluginmanager.register(ChildPlugin(Job.from_env()), "autograder-child")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if os.environ.get(ENV_VAR):
        return None  # a child: pytest runs the tests as usual
    option = config.option
    if option.help or option.version or option.collectonly or option.showfixtures:
        return None
    from autograder.cli import run_grading  # the engine loads only when it is needed

    steps, select = selection(config.args)
    if not steps:
        print("No graded step matches " + " ".join(config.args), file=sys.stderr)
        return int(pytest.ExitCode.USAGE_ERROR)
    return run_grading(
        steps,
        solutions=option.solutions,
        select=select,
        json_path=Path(option.autograder_json) if option.autograder_json else None,
        test_timeout=option.autograder_test_timeout,
        report_format=option.autograder_format,
        keyword=option.keyword,
        verbose=option.verbose,
    )


def selection(args: list[str]) -> tuple[list[Step], dict[str, set[str]]]:
    """The steps the command line points at, and per step the tests it names, if any.

    `exercises/` selects every step, `exercises/01_first_endpoint` one step, and
    `exercises/01_first_endpoint/test_app.py::test_health` one test.
    """
    catalog = load_catalog()
    chosen: dict[str, Step] = {}
    named: dict[str, set[str]] = {}
    for arg in args or ["exercises"]:
        path_text, _, test = arg.partition("::")
        path = Path(path_text).resolve()
        for step in catalog.steps:
            folder = step.exercise_dir
            if path == folder or folder in path.parents or path in folder.parents:
                chosen[step.id] = step
                if test and folder in path.parents:
                    named.setdefault(step.id, set()).add(test.split("[")[0])
    steps = [step for step in catalog.steps if step.id in chosen]
    return steps, named


__all__ = ["ROOT", "pytest_addoption", "pytest_cmdline_main", "pytest_configure"]
