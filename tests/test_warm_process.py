"""The warm process that children are forked from: shared between runs, or not at all.

On Linux and macOS a learner's second `pytest exercises/` is served by the warm process
the first one started (it has imported the heavy libraries), until the course's own
code changes or it has been idle for a while. The instructor's mode, and any run with
AUTOGRADER_SHARED_WARM=0, uses a warm process of its own that ends with the run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autograder.processes import _socket_path
from tests.helpers import ROOT, STEPS

FULL = f"Score: {STEPS[0].max_points}/{STEPS[0].max_points}"

pytestmark = pytest.mark.skipif(os.name == "nt", reason="children are spawned on Windows")


def grade_step_01(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "exercises/01_first_endpoint", "--solutions"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def warm_pid(path: str) -> int | None:
    """The pid of the warm process listening at `path`, from its greeting."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        try:
            connection.connect(path)
        except OSError:
            return None
        return json.loads(connection.makefile("rb").readline())["ready"]


def test_a_second_run_is_served_by_the_same_warm_process() -> None:
    path = _socket_path(shared=True)
    assert path is not None, "no private folder for the shared warm process"
    first = grade_step_01()
    assert first.stdout.rstrip().endswith(FULL), first.stdout
    pid = warm_pid(path)
    assert pid is not None, "the warm process did not outlive the run"
    second = grade_step_01()
    assert second.stdout.rstrip().endswith(FULL), second.stdout
    assert warm_pid(path) == pid


def test_a_run_that_shares_nothing_leaves_no_warm_process(tmp_path: Path) -> None:
    before = set(Path("/proc").glob("[0-9]*")) if Path("/proc").exists() else set()
    # Its own temporary folder names this run's warm process apart from any other
    # grading run on the machine at the same time.
    run = grade_step_01(AUTOGRADER_SHARED_WARM="0", TMPDIR=str(tmp_path))
    assert run.stdout.rstrip().endswith(FULL), run.stdout
    if not before:
        pytest.skip("no /proc to list processes")
    left = []
    for entry in set(Path("/proc").glob("[0-9]*")) - before:
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "autograder.zygote" in command and f"{tmp_path}{os.sep}" in command:
            left.append(command)
    assert not left, left


def test_a_change_to_the_graders_code_gets_a_new_warm_process(tmp_path: Path) -> None:
    copy = tmp_path / "course"
    for name in ("autograder", "coursekit", "requirements"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    before = _socket_path(shared=True, root=copy)
    engine = copy / "autograder" / "engine.py"
    engine.write_text(engine.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    assert _socket_path(shared=True, root=copy) != before


def test_the_shared_socket_lives_only_in_a_folder_no_one_else_can_enter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client sends its environment to the warm process: another user must never be
    # able to plant a socket (or a link to a folder of theirs) where it looks for one.
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    folder = tmp_path / f"autograder-{os.getuid()}"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert _socket_path(shared=True) is None
    folder.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    folder.symlink_to(tmp_path / "elsewhere")
    assert _socket_path(shared=True) is None
    folder.unlink()
    path = _socket_path(shared=True)
    assert path is not None and Path(path).parent == folder
    assert folder.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.name == "nt", reason="no warm process on Windows")
def test_a_child_runs_a_module_forked_from_the_warm_process(tmp_path: Path, monkeypatch) -> None:
    """`run_module` from a forked child starts from the warm process (its imports done);
    without one, a new interpreter, as `python -m` would."""
    from autograder import processes

    reported = tmp_path / "parent.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    monkeypatch.delenv(processes.WARM_SOCKET_ENV, raising=False)
    code = processes.run_module("tests.report_parent", [str(reported)], env, tmp_path / "a.log")
    assert code == 0 and int(reported.read_text()) == os.getpid()
    warm = processes._Zygote(shared=False)
    try:
        monkeypatch.setenv(processes.WARM_SOCKET_ENV, warm.path)
        code = processes.run_module("tests.report_parent", [str(reported)], env, tmp_path / "b.log")
        assert code == 0
        assert int(reported.read_text()) == warm.process.pid, "not forked from the warm process"
    finally:
        warm.stop()


def test_a_client_killed_with_answers_unread_does_not_end_the_warm_process(
    tmp_path: Path, monkeypatch
) -> None:
    """A client that dies before reading the warm process's answers resets its connection
    (ECONNRESET, not an end of file): the warm process drops that client and serves on.
    Before, the reset ended it, with every child of the run (an instructor's run on a
    busy machine lost tests so)."""
    import time

    from autograder import processes

    warm = processes._Zygote(shared=False)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        request = {
            "module": "tests.report_parent",
            "args": [str(tmp_path / "first.txt")],
            "env": env,
            "log": str(tmp_path / "first.log"),
            "needs": [],
        }
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(warm.path)
        connection.sendall((json.dumps(request) + "\n").encode())
        deadline = time.monotonic() + 60
        while not (tmp_path / "first.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # its "started" and "exited" answers wait, unread
        connection.close()  # with data unread: the warm process's next read is a reset
        time.sleep(0.2)
        monkeypatch.setenv(processes.WARM_SOCKET_ENV, warm.path)
        reported = tmp_path / "second.txt"
        code = processes.run_module("tests.report_parent", [str(reported)], env, tmp_path / "b.log")
        assert code == 0 and int(reported.read_text()) == warm.process.pid
    finally:
        warm.stop()


def test_a_warm_process_that_does_not_greet_is_passed_over(tmp_path: Path, monkeypatch) -> None:
    """`start_module` from a socket where nothing greets (a warm process gone wrong)
    starts a new interpreter instead: the module still runs, as `python -m` would."""
    import threading

    from autograder import processes

    path = str(tmp_path / "mute.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def hang_up() -> None:
        connection, _ = listener.accept()
        connection.close()  # no greeting: an end of file

    threading.Thread(target=hang_up, daemon=True).start()
    monkeypatch.setenv(processes.WARM_SOCKET_ENV, path)
    reported = tmp_path / "parent.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        code = processes.run_module("tests.report_parent", [str(reported)], env, tmp_path / "a.log")
    finally:
        listener.close()
    assert code == 0 and int(reported.read_text()) == os.getpid()


def test_the_shared_tls_context_is_one_and_still_verifies() -> None:
    import subprocess
    import sys

    # In a process of its own: the grading child and the app's process share it so.
    code = (
        "import ssl, httpx2\n"
        "from autograder.warm import share_tls_context\n"
        "share_tls_context(); share_tls_context()\n"
        "a, b = (httpx2.Client()._transport._pool._ssl_context for _ in range(2))\n"
        "assert a is b, 'a new context per client'\n"
        "assert a.verify_mode == ssl.CERT_REQUIRED and a.check_hostname, 'not verifying'\n"
        "print('ok')\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.stdout.strip() == "ok", completed.stderr


def test_a_child_the_warm_process_starts_too_late_is_killed_not_taken_for_the_next(
    tmp_path: Path, monkeypatch
) -> None:
    """A request that waited past its limit is given up (the grader then starts the child
    afresh). When the warm process answers it after all, that answer must not be taken
    as the next request's: before, every later child of the run was the wrong one, and a
    busy machine's run lost whole steps ("could not be collected", nothing printed). The
    late child is killed."""
    import queue
    import threading
    import time

    from autograder import processes

    path = str(tmp_path / "slow.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    gave_up = threading.Event()
    children: list[subprocess.Popen[bytes]] = []

    def serve() -> None:  # a warm process slow to answer its first request
        connection, _ = listener.accept()
        connection.sendall(b'{"ready": 1}\n')
        reader = connection.makefile("rb")
        for line in reader:
            request = json.loads(line)
            if request["id"] == 1:
                gave_up.wait(30)
            child = subprocess.Popen(["sleep", "60"], start_new_session=True)
            children.append(child)
            connection.sendall(json.dumps({"started": child.pid, "id": request["id"]}).encode())
            connection.sendall(b"\n")

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setattr(processes, "_socket_path", lambda shared: path)
    warm = processes._Zygote(shared=True)
    warm.fork_limit = 0.5
    try:
        with pytest.raises(queue.Empty):
            warm.fork(["first"], {}, tmp_path / "first.log", [])
        gave_up.set()
        second = warm.fork(["second"], {}, tmp_path / "second.log", [])
        assert len(children) == 2
        assert second == children[1].pid, "the late answer to the first was taken as this one's"
        assert children[0].wait(timeout=10) == -9, "the child of the request given up still runs"
        time.sleep(0.1)
        assert children[1].poll() is None
    finally:
        for child in children:
            child.kill()
            child.wait()
        warm.connection.close()
        listener.close()
