"""The two commands stay honest: pinned, consistent, and what CI runs."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import ROOT


def pins(name: str) -> dict[str, set[str]]:
    """package -> its pinned versions (several where they differ by Python version)."""
    found: dict[str, set[str]] = {}
    for line in (ROOT / "requirements" / name).read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", line.strip())
        if match:
            found.setdefault(match[1].lower(), set()).add(match[2])
    return found


def test_every_requirement_is_pinned() -> None:
    for name in ("grade.txt", "dev.txt"):
        for line in (ROOT / "requirements" / name).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                assert "==" in line, f"{name}: unpinned requirement {line!r}"


def test_grading_pins_equal_the_development_pins() -> None:
    grade, dev = pins("grade.txt"), pins("dev.txt")
    assert grade, "no pins found in grade.txt"
    different = {
        name: (version, dev.get(name))
        for name, version in grade.items()
        if dev.get(name) != version
    }
    assert not different, f"grade.txt and dev.txt disagree (re-lock both): {different}"


def test_grading_installs_no_jupyter_and_no_mkdocs() -> None:
    grade = pins("grade.txt")
    heavy = [
        name for name in grade if name.startswith(("jupyter", "notebook", "mkdocs", "nbclient"))
    ]
    assert not heavy, heavy


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in readme and "make grade" in readme
    assert re.search(r"^make test\b", ci, re.MULTILINE), ".ci/run must call `make test`"


def test_the_makefile_targets_go_through_course_py() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("grade", "test", "lab", "serve", "docs"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
        assert f"course.py {target}" in makefile, target


def test_no_virtual_environment_or_cache_is_tracked() -> None:
    # A tracked .venv (a link, even) replaces the learner's own on checkout.
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.splitlines()
    if not tracked:
        pytest.skip("not a git checkout")
    leaked = [
        path
        for path in tracked
        if path.split("/")[0] in {".venv", ".autograder"} or "/.model_cache/" in f"/{path}"
    ]
    assert not leaked, leaked


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals and process groups")
def test_stopping_course_py_serve_stops_uvicorn() -> None:
    """`kill` on the wrapper (what an IDE's stop button sends) leaves no server behind."""
    port = _free_port()
    wrapper = subprocess.Popen(
        [sys.executable, "course.py", "serve", "01", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: ours to inspect and clean up
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert wrapper.poll() is None, "course.py serve exited before it served"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "uvicorn never answered /health"
                time.sleep(0.2)
        wrapper.send_signal(signal.SIGTERM)
        wrapper.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _group_alive(wrapper.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(wrapper.pid), "uvicorn kept running after course.py serve stopped"
    finally:
        if _group_alive(wrapper.pid):
            os.killpg(wrapper.pid, signal.SIGKILL)
        wrapper.wait(timeout=30)
