"""The three-system CI workflow and the devcontainer say what the course says.

Neither can run here (no GitHub runners, no Docker), so these checks hold each to the
files it depends on: the README's two commands, the supported Pythons, course.py's
commands, the ports the course serves on, and course.py's Windows code paths.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

import course
from tests.helpers import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "checks.yml"
DEVCONTAINER = ROOT / ".devcontainer" / "devcontainer.json"


def readme_commands() -> list[str]:
    """The quickstart's commands without make: the lines of its second code block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    return [line.strip() for line in blocks[1].splitlines() if line.strip()]


def oldest_python() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return re.search(r"3\.\d+", project["requires-python"]).group()  # type: ignore[union-attr]


def test_the_readme_has_the_two_commands_the_workflow_runs() -> None:
    assert readme_commands() == ["python course.py grade", "python course.py test"]


def test_the_workflow_runs_the_readme_commands_on_three_systems() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    (job,) = workflow["jobs"].values()
    matrix = job["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "macos-latest", "windows-latest"}
    assert job["runs-on"] == "${{ matrix.os }}"
    assert oldest_python() in matrix["python"], "the oldest supported Python is not tested"
    assert len(matrix["python"]) >= 2, "test the newest Python too"
    assert job["strategy"]["fail-fast"] is False, "one system's failure must not hide another's"
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert runs == readme_commands(), "CI must run exactly what the README tells a newcomer"
    # The browser checks fail on CI without a browser (CI is set on GitHub's runners).
    test_step = next(step for step in job["steps"] if step.get("run") == "python course.py test")
    assert "CHROMIUM" in test_step.get("env", {})
    chrome = next(step for step in job["steps"] if "setup-chrome" in step.get("uses", ""))
    assert test_step["env"]["CHROMIUM"] == f"${{{{ steps.{chrome['id']}.outputs.chrome-path }}}}"
    assert job["timeout-minutes"] <= 90


def test_the_devcontainer_opens_the_course_ready_to_grade() -> None:
    container = json.loads(DEVCONTAINER.read_text(encoding="utf-8"))
    version = re.search(r"python:\d+-(3\.\d+)", container["image"])
    assert version, "pin the image to a Python version"
    assert version.group(1) == oldest_python()
    command = container["postCreateCommand"].split()
    assert command[:2] == ["python", "course.py"]
    assert f"python course.py {command[2]}" in course.USAGE, "not a command of course.py"
    settings = container["customizations"]["vscode"]["settings"]
    interpreter = settings["python.defaultInterpreterPath"]
    expected = course.venv_python().relative_to(course.ROOT).as_posix()
    assert interpreter == "${containerWorkspaceFolder}/" + expected
    # The ports the course serves on: the website and `serve` (8000), JupyterLab (8888).
    assert set(container["forwardPorts"]) == {8000, 8888}
    assert "dev_addr" not in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


POSIX_ONLY = {"fork", "setsid", "getuid", "killpg", "getpgid", "SIGKILL", "SIGHUP", "WNOHANG"}


def test_course_py_calls_nothing_posix_only_unguarded() -> None:
    """course.py runs before anything is installed, on Windows too."""
    tree = ast.parse((ROOT / "course.py").read_text(encoding="utf-8"))
    guarded = {
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") == "hasattr"
        and isinstance(node.args[1], ast.Constant)
    }
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in POSIX_ONLY
    }
    assert used <= guarded, f"POSIX-only without a hasattr guard: {sorted(used - guarded)}"
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not imported & {"fcntl", "resource", "pwd", "grp", "termios"}


def test_the_windows_paths_of_course_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(course.os, "name", "nt")
    assert course.venv_python() == course.VENV / "Scripts" / "python.exe"
    monkeypatch.undo()
    assert course.venv_python() == course.VENV / "bin" / "python"
    assert isinstance(course.step_folder("solutions", "1"), Path)
