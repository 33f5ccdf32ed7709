"""GitHub Classroom: the workflow, in the shape the Classroom UI writes, for course.toml.

Classroom's own Python grader runs only `*_test.py` files under its pinned pytest 7.2,
so it would find none of this course's tests. Instead each course step is one plain
step running the course's grader, which writes the reporter's input (`result`, base64
JSON with per-test points) to `$GITHUB_OUTPUT`; the reporter sums them.
`python -m autograder classroom-workflow > .github/workflows/classroom.yml` rewrites it
when steps change (tests/test_platforms.py fails until then).
"""

from __future__ import annotations

import json

from autograder.catalog import Step

PYTHON = "3.11"  # the oldest Python the course supports


def runner_id(step: Step) -> str:
    """The step id the reporter knows a runner by; its env is `<ID upper>_RESULTS`."""
    return f"step{step.id}"


def env_name(step: Step) -> str:
    return f"{runner_id(step).upper()}_RESULTS"


def workflow(steps: list[Step]) -> str:
    lines = [
        "# Written by `python -m autograder classroom-workflow`: regenerate, do not edit.",
        "name: Autograding Tests",
        "on: [push, repository_dispatch, workflow_dispatch]",
        "permissions:",
        "  checks: write",
        "  actions: read",
        "  contents: read",
        "jobs:",
        "  run-autograding-tests:",
        "    runs-on: ubuntu-latest",
        "    if: github.actor != 'github-classroom[bot]'",
        "    steps:",
        "      - name: Checkout code",
        "        uses: actions/checkout@v4",
        "      - name: Set up Python",
        "        uses: actions/setup-python@v5",
        "        with:",
        f'          python-version: "{PYTHON}"',
        "      - name: Install the pinned grading environment",
        "        run: python -m pip install -r requirements/grade.txt",
    ]
    for step in steps:
        lines += [
            f"      - name: {json.dumps(f'{step.id} {step.title}')}",  # a title may hold ":"
            f"        id: {runner_id(step)}",
            "        timeout-minutes: 10",
            f"        run: python -m autograder grade {step.id} --github-output",
        ]
    lines += [
        "      - name: Autograding Reporter",
        "        uses: classroom-resources/autograding-grading-reporter@v1",
        "        env:",
        *(
            f'          {env_name(step)}: "${{{{steps.{runner_id(step)}.outputs.result}}}}"'
            for step in steps
        ),
        "        with:",
        f"          runners: {','.join(runner_id(step) for step in steps)}",
    ]
    return "\n".join(lines) + "\n"
