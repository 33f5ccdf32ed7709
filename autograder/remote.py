"""An instructor's tests over HTTP: the submission's app in a process of its own.

In an instructor's run (`--source-root`) of a step marked `over_http` in course.toml,
the graded tests that reach the submission only from outside run in a grading child that
never imports the submission's code: nothing the submission does can change how those
tests run or what their results say. Most reach the app over HTTP (through the grader's
`client`, `app_url` or `app_server` fixture); a few run the files of the grader's
`graded_folder` in processes of their own (step 12's suites, step 15's deployment).
For each test, that child starts the step's app in another process
(`autograder.appserver`: sandboxed like any child of such a run, killed when the test
ends, and what it started with the run at the latest).

`client` is an httpx client on it, which behaves as the test client does where a test
can tell:
- it follows redirects, and waits as long as the grader's per-test limit allows;
- an exception the app raises fails the test with the grader's explanation of it,
  raised where the request was made, as the test client re-raises it.

`app_url` is its base URL, as under the real server a grading child starts: an exception
of the app is a 500 to the test, and the cause a failure is told with. The test file's
`app_settings` (the settings `get_settings` answers) and `app_overrides` (dependencies
swapped for the course's own callables) are applied in the app's process;
`app_server(env)` starts it with those environment variables added (and the course's
patches and set-ups, `autograder.appserver.Changes`). `app_log` is what those apps
logged, as each process reported it (`autograder.applog`).

Either way, a module that cannot be imported, or an app whose start-up fails, is
reported as in a grading child, and what the app printed comes with the test's result.

The steps so marked are those whose such tests behave the same under a real server (no
work after the response; a stream only where the test reads it over a real server in
both modes): the course's checks grade every known-wrong and known-right implementation
of those steps this way too.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from autograder import applog
from autograder.appserver import Changes
from autograder.catalog import Step
from autograder.child import ENV_VAR as CHILD_ENV_VAR
from autograder.messages import Explanation, caused_by, crashed_message, explain_test_failure
from autograder.processes import WARM_SOCKET_ENV, imports_of, start_module

GRADERS_FIXTURES = frozenset({"client", "app", "exercise", "app_url", "app_server", "app_log"})
# The grader's fixtures a remote job serves over HTTP (with what those apps logged), or
# that name the graded folder for a test that runs it in processes of its own (see
# `autograder.child`), and pytest's own that a test may take beside them (a scratch
# folder, the test's request: the grader's side).
OVER_HTTP_FIXTURES = frozenset(
    {"client", "app_url", "app_server", "app_log", "graded_folder", "tmp_path", "request"}
)
CONFIGURING = ("app_settings", "app_overrides")  # a test file's, read by `app_url`
# Names by which a test or fixture would import a module itself, or reach the grader's
# in-process fixtures: it stays in the submission's process.
IMPORTING = frozenset({"import_module", "find_spec", "__import__", "modules", "getfixturevalue"})
START_LIMIT = 60.0  # seconds for the app's process to import, start up and listen
MAX_TEXT = 4000  # characters kept of a message the submission's process sends
MAX_LOG_LINES = 200  # log records kept of one app's process
# What `client` and `serving` start the app's process inside: the grading child's note to
# its engine that the app is starting, and then that it is done (the engine's "app_start"
# phase, with a limit of its own).
Starting = Callable[[], contextlib.AbstractContextManager[object]]
NOTE_WAIT = 1.0  # seconds a failed test's explanation waits for the app's note of an error


@functools.cache
def http_only_tests(step: Step) -> frozenset[str]:
    """The step's graded tests that reach the app only over HTTP (read from the course's
    own test files, never the submission's).

    A test qualifies when each of its fixtures is `client`, `app_url`, `app_server`,
    `app_log`, `graded_folder`, `tmp_path` or `request`, or a fixture of its own file
    (plain, or one per module) whose fixtures qualify in turn (step 10's `served` wraps `app_url`;
    step 15's `deployment` runs the graded folder's app under uvicorn), and neither it
    nor those fixtures import one of the step's modules (or any by name) in their body.
    A file whose `app_settings` or `app_overrides` does not qualify, or that has an
    autouse fixture, has no such test.
    """
    if not step.over_http:
        return frozenset()

    def functions(file: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
        body = ast.parse(file.read_text(encoding="utf-8")).body
        return [node for node in body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]

    def defines_a_graders_fixture(nodes: list[ast.FunctionDef | ast.AsyncFunctionDef]) -> bool:
        return any(node.name in GRADERS_FIXTURES for node in nodes)

    def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str] | None:
        arguments = node.args
        if arguments.kwonlyargs or arguments.vararg or arguments.kwarg:
            return None
        return [argument.arg for argument in arguments.posonlyargs + arguments.args]

    def fixture_decorator(node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.expr | None:
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if isinstance(target, ast.Attribute | ast.Name) and "fixture" in ast.unparse(target):
                return decorator
        return None

    def is_fixture(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        return fixture_decorator(node) is not None

    def plain_fixture(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        # @pytest.fixture, or one per module (step 15's deployment): autouse, or a
        # parametrization, would change which tests it runs for and what it gives them.
        decorator = fixture_decorator(node)
        if len(node.decorator_list) != 1 or decorator is None:
            return False
        if isinstance(decorator, ast.Attribute):
            return True
        return (
            isinstance(decorator, ast.Call)
            and not decorator.args
            and [keyword.arg for keyword in decorator.keywords] == ["scope"]
            and isinstance(decorator.keywords[0].value, ast.Constant)
            and decorator.keywords[0].value.value == "module"
        )

    def imports_itself(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        # In a remote job the course's copy of the step is what an import finds: a test or
        # fixture that imports one of the step's modules itself, or any module by name at
        # run time (step 10's shared `server`), needs the submission's, in its process.
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and (
                inner.level or (inner.module or "").split(".")[0] in step.modules
            ):
                return True
            if isinstance(inner, ast.Import) and any(
                alias.name.split(".")[0] in step.modules for alias in inner.names
            ):
                return True
            name = inner.id if isinstance(inner, ast.Name) else getattr(inner, "attr", None)
            if name in IMPORTING:
                return True
        return False

    # The grader's `client` is built on its `app`, on its `exercise`: a conftest.py that
    # defines one of them configures the app in-process for every file of the step.
    conftest = step.exercise_dir / "conftest.py"
    if conftest.exists() and defines_a_graders_fixture(functions(conftest)):
        return frozenset()
    found = set()
    for file in sorted(step.exercise_dir.glob("test_*.py")):
        nodes = functions(file)
        declared = [node for node in nodes if is_fixture(node)]
        if any("autouse" in ast.unparse(fixture_decorator(node) or node) for node in declared):
            continue  # an autouse fixture would run in the grader's process for every test
        fixtures = {
            node.name: parameters(node)
            for node in declared
            if plain_fixture(node) and not imports_itself(node)
        }
        # Fixtures of this file that reach the app only over HTTP, to a fixed point. One
        # that takes a grader's fixture's name (step 05's `client`) stands for it here.
        remote = set(OVER_HTTP_FIXTURES) - {node.name for node in declared}
        while True:
            more = {
                name
                for name, names in fixtures.items()
                if name not in remote and names is not None and set(names) <= remote
            }
            if not more:
                break
            remote |= more
        if any(name in fixtures and name not in remote for name in CONFIGURING):
            continue  # app_url would read, in the grader's process, what needs the app's
        # A test may be wrapped by a function of its own file (step 10's `graded`, which
        # keeps the signature): a mark, such as parametrize, adds what the test is given.
        wrappers = {node.name for node in nodes if not is_fixture(node)}
        for node in nodes:
            names = parameters(node)
            wrapped = all(isinstance(d, ast.Name) and d.id in wrappers for d in node.decorator_list)
            if (
                names
                and set(names) <= remote
                and wrapped
                and node.name.startswith("test_")
                and not imports_itself(node)
            ):
                found.add(node.name)
    return frozenset(found & {test.name for test in step.tests})


class ServerFailure(Exception):
    """The app raised while it served a test's request (or failed to start)."""

    def __init__(self, explanation: Explanation) -> None:
        super().__init__(explanation.message)
        self.explanation = explanation


class _Report:
    """What the app's process appended to its report file, read as untrusted input."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
        self._pending = ""

    def read(self) -> list[dict[str, Any]]:
        self._pending += self._file.read()
        *lines, self._pending = self._pending.split("\n")
        messages = []
        for line in lines:
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and len(message) == 1:
                    messages.append(message)
        return messages

    def close(self) -> None:
        self._file.close()


def _text(value: object) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) and value else ""


def _failure(data: object) -> ServerFailure:
    data = data if isinstance(data, dict) else {}
    outcome = data.get("outcome")
    explanation = Explanation(
        outcome if outcome in {"failed", "error", "not_implemented"} else "error",
        _text(data.get("message")) or "The app raised an exception.",
        _text(data.get("symptom")),
        data.get("waited") is True,
    )
    return ServerFailure(explanation)


class _Served:
    """The app's process for one test, and what it reports."""

    def __init__(
        self, step: Step, source: Path, scratch: Path, *options: str, env: dict[str, str]
    ) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        report_path = scratch / "report.jsonl"
        report_path.touch()
        self.log = scratch / "app.log"
        self.printed_path = scratch / "printed.txt"  # the app's sys.stdout (appserver)
        self.report = _Report(report_path)
        self.errors: list[ServerFailure] = []
        self.logged: list[applog.LogLine] = []
        self.source, self.given = source, step.given
        self.url = ""  # once it serves
        self.stopped = False
        # Neither the grading job (where its events go) nor the warm process's socket.
        inherited = {
            name: value
            for name, value in os.environ.items()
            if name not in {CHILD_ENV_VAR, WARM_SOCKET_ENV}
        }
        self.process = start_module(
            "autograder.appserver",
            [step.id, str(source), str(report_path), *options],
            {**inherited, **env},  # what the test sets, as an operator would
            self.log,
            needs=_needs(step),
        )

    def wait_listening(self, imported_only: bool = False) -> int:
        """The port the app serves on, once it does; else raise why it does not.

        With `imported_only`, return 0 once the step's modules are imported.
        """
        deadline = time.monotonic() + START_LIMIT
        while True:
            exited = self.process.poll() is not None
            for message in self.report.read():
                if "import_error" in message:
                    raise ImportProblem(_text(message["import_error"]) or "The import failed.")
                if "server_error" in message:
                    raise _failure(message["server_error"])
                self._take_log(message)  # the lifespan's, say
                if imported_only and message.get("imported") is True:
                    return 0
                port = message.get("listening")
                if isinstance(port, int) and 0 < port < 65536:
                    return port
            if exited:
                tail = self.log.read_text(encoding="utf-8", errors="replace").strip()
                last = tail.splitlines()[-1] if tail else "it printed nothing"
                raise ServerFailure(
                    Explanation("error", f"The app's server stopped before it served: {last}")
                )
            if time.monotonic() > deadline:
                from autograder.expect import OutOfTime

                raise OutOfTime(f"The app did not start serving within {START_LIMIT:g} s.")
            time.sleep(0.005)

    def check(self) -> None:
        """Raise the first exception the app reported since the last check."""
        self._read_errors()
        if self.errors:
            raise self.errors.pop(0)

    def check_alive(self) -> None:
        """Raise what a grading child says of a process that stops during a test."""
        deadline = time.monotonic() + 1.0  # a connection cut as the process exits
        while (code := self.process.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if code is not None:
            raise ServerFailure(Explanation("crashed", crashed_message(code)))

    def printed(self) -> str:
        """The end of what the app printed (at most MAX_TEXT characters' worth)."""
        try:
            with open(self.printed_path, "rb") as file:
                file.seek(0, os.SEEK_END)
                file.seek(max(0, file.tell() - MAX_TEXT))
                return file.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def explain(self, exc: BaseException) -> Explanation:
        """Why a test on this app failed with `exc` (the grader's `app_url`): the app's
        process stopped, or the app raised (its exception told first, then what the test
        saw of it, as a grading child tells an app's exception under a real server)."""
        own = explain_test_failure(exc, self.source, self.given)
        if not self.stopped:  # still serving: what it reported since, and whether it died
            if own.outcome == "failed":
                self.await_notes()
            else:
                self._read_errors()
            try:
                if self.process.poll() is not None or own.outcome != "failed":
                    self.check_alive()  # a cut connection: the process may be ending
            except ServerFailure as stopped:
                return stopped.explanation
        if self.errors and own.outcome == "failed":
            cause = self.errors[0].explanation
            return replace(caused_by(cause, own.message), waited=own.waited or cause.waited)
        return own

    def await_notes(self) -> None:
        """Read what the app reported, giving a note of an error a moment to arrive if
        none has: a stream the app's generator broke can reach the test complete before
        the exception reaches the app's note (fastapi.sse ends the body first). Only a
        failing test waits, and only for its message."""
        self._read_errors()
        deadline = time.monotonic() + NOTE_WAIT
        while not self.errors and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            self._read_errors()

    def _read_errors(self) -> None:
        for message in self.report.read():
            if "server_error" in message:
                self.errors.append(_failure(message["server_error"]))
            self._take_log(message)

    def _take_log(self, message: dict[str, Any]) -> None:
        line = applog.parse(message.get("log"))
        if line is not None and len(self.logged) < MAX_LOG_LINES:
            self.logged.append(line)

    def logged_lines(self) -> list[applog.LogLine]:
        """What the app logged at WARNING or above, so far (`autograder.applog`)."""
        if not self.stopped:
            self._read_errors()
        return list(self.logged)

    def stop(self) -> None:
        """End the app's process; what it reported until then stays for `explain` (a
        test may fail after its server is gone, on what that server answered)."""
        if not self.stopped:
            self._read_errors()
            self.stopped = True
        self.process.kill()
        self.report.close()


class ImportProblem(Exception):
    """A module of the step could not be imported: the message a grading child gives."""


@functools.cache
def _needs(step: Step) -> tuple[str, ...]:
    files = [*step.solution_dir.glob("*.py"), Path(__file__).with_name("appserver.py")]
    # coursekit.server: the warm process then imports the modules uvicorn loads lazily.
    return tuple(sorted(imports_of(files, local=step.modules) | {"coursekit.server"}))


def probe(step: Step, source: Path) -> None:
    """Import the step's modules in a process of their own: raise ImportProblem if one
    cannot be imported (as a grading child would report it)."""
    with _served(step, source, "--import-only") as served:
        try:
            served.wait_listening(imported_only=True)
        except ImportProblem:
            raise
        except Exception:  # a test's failure, not the import's: each test reports it
            pass


@contextlib.contextmanager
def _served(
    step: Step, source: Path, *options: str, env: dict[str, str] | None = None
) -> Iterator[_Served]:
    with tempfile.TemporaryDirectory(prefix="app-", ignore_cleanup_errors=True) as scratch:
        served = _Served(step, source, Path(scratch), *options, env=env or {})
        try:
            yield served
        finally:
            served.stop()


@contextlib.contextmanager
def client(step: Step, source: Path, starting: Starting = contextlib.nullcontext) -> Iterator[Any]:
    """An httpx client on a fresh process serving the step's app, for one test.

    The app's start runs inside `starting()` (the grading child tells its engine, so that
    the start does not count against the test's own limit)."""
    import httpx2 as httpx  # what the test client is built on, so responses are alike

    with _served(step, source) as served:
        try:
            with starting():
                port = served.wait_listening()
        except ImportProblem as problem:  # the probe passed: an import that is not stable
            raise ServerFailure(Explanation("error", str(problem))) from None

        class Client(httpx.Client):
            app = served  # the app's process, for what it reported (the grader's `app_log`)

            def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
                try:
                    response = super().send(request, **kwargs)
                except httpx.TransportError:
                    served.check()
                    served.check_alive()
                    raise
                served.check()  # an exception of the app fails the test here, as in-process
                return response

        with Client(
            base_url=f"http://127.0.0.1:{port}", follow_redirects=True, timeout=None
        ) as http:
            try:
                yield http
            finally:
                # Printed here, it is captured with the test, as the app's prints are when
                # the app runs in the grading child.
                sys.stdout.write(served.printed())
        served.check()


@contextlib.contextmanager
def serving(
    step: Step,
    source: Path,
    settings: tuple[str, dict[str, Any]] | None,
    env: dict[str, str] | None = None,
    overrides: list[tuple[str, str]] | None = None,
    changes: Changes | None = None,
    starting: Starting = contextlib.nullcontext,
) -> Iterator[_Served]:
    """A fresh process serving the step's app under a real server, for one test: the
    grader's `app_url` and `app_server` in a remote job. With `settings`, (MODULE,
    VALUES), the app's MODULE.get_settings answers MODULE.Settings(**VALUES) there, with
    `overrides` the dependencies named answer the course's callables, `changes` are made
    (`autograder.appserver.Changes`), and `env` is added to its environment. The app's
    start runs inside `starting()`, as in `client`.

    As under a real server in a grading child, an exception of the app is a 500 to the
    test, not an error raised into it; `_Served.explain` tells it as a failure's cause.
    """
    options = ("--settings", json.dumps(list(settings))) if settings else ()
    if overrides:
        options += ("--overrides", json.dumps(overrides))
    if changes:
        options += changes.options()
    with _served(step, source, *options, env=env or {}) as served:
        try:
            with starting():
                served.url = f"http://127.0.0.1:{served.wait_listening()}"
        except ImportProblem as problem:  # the probe passed: an import that is not stable
            raise ServerFailure(Explanation("error", str(problem))) from None
        try:
            yield served
        except BaseException:  # the test failed while its server ran: why, before it ends
            if not served.stopped:
                served.await_notes()
            raise
        finally:
            sys.stdout.write(served.printed())  # captured with the test, as in `client`
