"""Reports point at the cause: one line per untouched step, a shared symptom said once
and first, the code-level hint only on request, and messages that show what was sent."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from autograder import lastrun
from autograder.catalog import load_catalog
from autograder.engine import Settings, grade_step
from autograder.expect import describe, shown
from autograder.lastrun import recall, remember
from autograder.pristine import PRISTINE_FILE, stub_fingerprints
from tests.helpers import ROOT, STEPS, GradingRun, require_shipped_stubs

CATALOG = load_catalog()


def grade_copy(
    tmp_path: Path, step_id: str, edit, *options: str, kind: str = "solutions", file: str = "app.py"
):  # type: ignore[no-untyped-def]
    """Grade a copy of a step's solution (or stub) with `edit` applied to `file`; its report."""
    step = CATALOG.step(step_id)
    if kind == "exercises":
        require_shipped_stubs(step)
    root = tmp_path / "submission"
    folder = root / step.slug
    shutil.copytree(ROOT / kind / step.slug, folder)
    module = folder / ("schemas.py" if step.id == "02" and kind == "exercises" else file)
    module.write_text(edit(module.read_text(encoding="utf-8")), encoding="utf-8")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "autograder",
            "grade",
            step.id,
            "--source-root",
            str(root),
            *options,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # Messages wrap at 88 columns; the assertions read them as one line.
    return " ".join((completed.stdout + completed.stderr).split())


def test_pristine_json_holds_the_fingerprints_of_the_stubs() -> None:
    require_shipped_stubs(*STEPS)
    recorded = json.loads(PRISTINE_FILE.read_text(encoding="utf-8"))
    assert recorded == stub_fingerprints(), (
        "a stub changed: run `python -m autograder pristine --update`"
    )


def test_an_untouched_step_is_one_line(stubs_run: GradingRun) -> None:
    require_shipped_stubs(*STEPS)
    for step in STEPS:
        block = stubs_run.stdout.split(f"\n{step.id} {step.title} ", 1)[1].split("\n\n", 1)[0]
        lines = block.strip().splitlines()
        assert len(lines) == 2, block
        assert f"Not started: read exercises/{step.slug}/README.md" in lines[1]
    assert "FAIL" not in stubs_run.stdout and "Hint:" not in stubs_run.stdout


def test_a_started_step_names_each_unwritten_function_once(tmp_path: Path) -> None:
    output = grade_copy(tmp_path, "03", lambda text: text + "\n# started\n", kind="exercises")
    assert "Not started" not in output
    assert re.search(r"app\.py, line \d+, in predict_ticket\(\) still raises", output), output
    assert len(re.findall(r"in predict_ticket\(\) still", output)) == 1, output


def test_one_wrong_status_is_reported_once_as_the_likely_cause(tmp_path: Path) -> None:
    output = grade_copy(
        tmp_path,
        "07",
        lambda text: text.replace("status.HTTP_202_ACCEPTED)", "status.HTTP_201_CREATED)", 1),
    )
    causes = re.findall(r"Likely cause of (\d+) tests failing: (.*?)\.", output)
    assert len(causes) == 1, output
    assert int(causes[0][0]) >= 5
    assert causes[0][1].startswith("POST /jobs answers 201 where 202 is expected"), output
    assert "Hint:" not in output, "code-level hints are given only on request"
    assert "python -m autograder hint 07" in output


def test_hints_come_with_verbose(tmp_path: Path) -> None:
    output = grade_copy(
        tmp_path, "01", lambda text: text.replace('{"status": "ok"}', '{"status": "OK"}'), "-v"
    )
    assert "Hint: " + CATALOG.step("01").test("test_health_returns_ok").hint[:30] in output


def test_an_error_in_given_code_names_the_unwritten_part(tmp_path: Path) -> None:
    output = grade_copy(tmp_path, "02", lambda text: text + "\n# started\n", kind="exercises")
    assert re.search(r"TicketRequest in \S*schemas\.py has no `text` yet", output), output


def test_a_500_names_the_line_that_raised(tmp_path: Path) -> None:
    output = grade_copy(
        tmp_path,
        "04",
        lambda text: text.replace(
            '    models = getattr(request.app.state, "models", {})',
            '    raise KeyError("oops")',
            1,
        ),
        file="registry.py",
    )
    assert re.search(r"Your code raised KeyError: 'oops' at \S*registry\.py, line \d+", output), (
        output
    )


def test_a_message_names_the_environment_the_test_set(tmp_path: Path) -> None:
    step = CATALOG.step("06")
    folder = tmp_path / step.slug
    shutil.copytree(step.solution_dir, folder)
    app = folder / "app.py"
    app.write_text(
        app.read_text(encoding="utf-8").replace("label = max(votes", "label = min(votes", 1),
        encoding="utf-8",
    )
    records = grade_step(
        step,
        Settings(
            source=lambda _: folder,
            select=lambda _, test: test == "test_the_combined_label_is_the_majority",
        ),
    )
    assert not records[0].passed
    assert "ENSEMBLE_UPSTREAM_URLS=" in records[0].message, records[0].message


def test_strings_in_messages_are_quoted() -> None:
    assert shown(" token") == '" token"'
    assert shown("") == '""'


def test_describe_names_the_headers_the_test_set() -> None:
    request = httpx2.Request(
        "POST", "http://test/embed", headers={"Authorization": "Bearer nope"}, json={"a": 1}
    )
    text = describe(httpx2.Response(401, request=request))
    assert "authorization: Bearer nope" in text
    assert "user-agent" not in text.lower()


def test_hint_and_next_reuse_the_last_run_until_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lastrun, "LAST_RUN_FILE", tmp_path / "last-run.json")
    step = CATALOG.step("01")
    folder = tmp_path / step.slug
    shutil.copytree(step.solution_dir, folder)
    records = grade_step(step, Settings(source=lambda _: folder))
    remember(step, folder, records)
    assert recall(step, folder) == records
    app = folder / "app.py"
    app.write_text(app.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    assert recall(step, folder) is None


def test_course_py_grades_only_the_step_it_is_given() -> None:
    completed = subprocess.run(
        [sys.executable, "course.py", "grade", "exercises/01_first_endpoint", "--solutions"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    rows = [line for line in completed.stdout.splitlines() if re.match(r"\| \d\d ", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["01"], completed.stdout


def test_the_home_pages_example_failure_is_what_the_grader_says(tmp_path: Path) -> None:
    """docs/index.md shows a report rendered from a record whose message is written by
    hand (docs/hooks.py, EXAMPLE_FAILURE): it must be the message grading really gives."""
    spec = importlib.util.spec_from_file_location("course_site_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = hooks  # its dataclasses look their module up there
    spec.loader.exec_module(hooks)
    test, message = hooks.EXAMPLE_FAILURE
    output = grade_copy(tmp_path, "01", lambda text: text.replace("word.lower()", "word"))
    assert f"FAIL {test}" in output and message in output, output


def test_a_step_whose_server_is_missing_says_so_once(monkeypatch, tmp_path: Path) -> None:
    import dataclasses
    import socket

    from autograder.reports import step_summary
    from coursekit import redis_server

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(redis_server.ENV, f"redis://127.0.0.1:{port}/0")
    step = dataclasses.replace(CATALOG.step("01"), services=("redis",))
    records = grade_step(step, Settings(source=lambda _: ROOT / "solutions" / step.slug))
    assert {record.outcome for record in records} == {"not_run"}
    assert sum(record.score for record in records) == 0
    report = " ".join(step_summary(step, records).split())
    assert report.count("Nothing answers at COURSE_REDIS_URL") == 1, report
    assert "valkey/valkey" in report and "FAIL" not in report, report
    # Without a binary for the system and with no server named, the sentence says what to do.
    monkeypatch.delenv(redis_server.ENV)
    monkeypatch.setattr(redis_server, "available", lambda: False)
    records = grade_step(step, Settings(source=lambda _: ROOT / "solutions" / step.slug))
    assert {record.message for record in records} == {redis_server.NO_SERVER}
