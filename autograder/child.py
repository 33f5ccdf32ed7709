"""The grader's child side: runs one step's tests and writes one event per line.

The parent (`autograder.engine`) starts `python -m pytest exercises/NN_slug` with the
job in the environment variable `AUTOGRADER_CHILD`. This plugin then
1. puts the folder being graded (the learner's, a solution, a known-wrong copy) first
   on `sys.path`, imports the step's modules once and reports `import` /
   `import_error` (so the parent can time the import and stop a hanging one);
2. runs the selected tests, writing `start` before each one and `result` after it, so
   the parent knows which test was running if the process hangs or dies;
3. offers the fixtures the graded tests use: `exercise`, `app`, `client`, `live_server`,
   `app_url`, `app_server`, `graded_folder`.

A remote job (an instructor's run of the tests that reach the app only over HTTP, see
`autograder.remote`) does none of 1: its `client`, `app_url` and `app_server` talk HTTP
to the app served in a process of its own, `graded_folder` names the folder for tests
that run its files in processes of their own, and this process never imports the
submission's code.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from autograder.applog import LogLine, collecting
from autograder.appserver import Changes
from autograder.catalog import Step, load_catalog
from autograder.messages import (
    Explanation,
    explain_import_failure,
    explain_test_failure,
    missing_app,
)

ENV_VAR = "AUTOGRADER_CHILD"
# `app_server`'s default settings: those of the test file's `app_settings`, if it has one.
FILE_SETTINGS = object()


@dataclass(frozen=True)
class Job:
    step: str
    source: str  # the folder whose modules are graded
    events: str  # the file the events are appended to
    only: tuple[str, ...]  # the graded tests to run
    # With a name, a test that must fail runs among the others (see `_add_canary`).
    canary: str = ""
    # An instructor's run of tests that use only `client`: this process never imports
    # the submission, and each test's client is on its app in a process of its own.
    remote: bool = False

    def to_env(self) -> str:
        return json.dumps({**self.__dict__, "only": list(self.only)})

    @classmethod
    def from_env(cls) -> Job:
        data = json.loads(os.environ[ENV_VAR])
        return cls(
            data["step"],
            data["source"],
            data["events"],
            tuple(data["only"]),
            data.get("canary", ""),
            bool(data.get("remote", False)),
        )


class ChildPlugin:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.step: Step = load_catalog().step(job.step)
        self.source = Path(job.source).resolve()
        self._source_text = str(self.source)
        self._events = open(job.events, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the run)
        self._outcomes: dict[str, Explanation] = {}
        self._printed: dict[str, str] = {}  # what the learner's code printed, per test
        self._server_errors: list[BaseException] = []  # what the app raised, this test
        self._environment = dict(os.environ)  # to name what a test changed
        self._not_learner_modules: dict[str, Any] = {}  # see forget_learner_modules
        self._remote_served: Any = None  # the last app `app_url`/`app_server` served, this test
        self._remote_servers: list[Any] = []  # every app served, this test (for `app_log`)

    # -- events ---------------------------------------------------------------------

    def emit(self, event: str, **data: Any) -> None:
        self._events.write(json.dumps({"event": event, **data}) + "\n")
        self._events.flush()

    # -- learner modules ------------------------------------------------------------

    def forget_learner_modules(self) -> None:
        """Drop the learner's modules from `sys.modules` so the next import is fresh."""
        # Cheap enough to run at every test: a module once found not to be the
        # learner's is skipped while it stays the same object, and `__file__` is read
        # from the module's dict (a `getattr` can run a module's own `__getattr__`, which
        # cost some libraries' modules milliseconds each). The learner's modules are found
        # through the resolved folder first on sys.path, so their `__file__` starts with it
        # exactly; a plain string comparison, since resolving thousands of paths at every
        # test once cost a model step seconds of CPU.
        prefix = self._source_text
        others = self._not_learner_modules
        for name, module in list(sys.modules.items()):
            if others.get(name) is module:
                continue
            if name in self.step.shared:  # stateless given code: kept for the whole run
                continue
            namespace = getattr(module, "__dict__", None)
            file = namespace.get("__file__") if isinstance(namespace, dict) else None
            if (
                isinstance(file, str)
                and file.startswith(prefix)
                and os.path.dirname(file) == prefix
            ):
                del sys.modules[name]
            else:
                others[name] = module

    def import_fresh(self, name: str) -> ModuleType:
        """Import `name` from the graded folder, anew, so no test sees another's state.

        The step's `shared` modules (given, stateless) are imported once per run: each
        fresh import of a step's schemas and routes cost a test 10-40 ms.
        """
        self.forget_learner_modules()
        return importlib.import_module(name)

    # -- pytest hooks -----------------------------------------------------------------

    def pytest_configure(self, config: pytest.Config) -> None:
        from autograder.warm import share_tls_context

        share_tls_context()
        if self.job.remote:  # none of the submission's code runs here, nor may reach in
            from autograder.sandbox import refuse_debuggers

            refuse_debuggers()
            return
        sys.path.insert(0, str(self.source))
        self._record_server_errors()
        self._compile_once()

    def _compile_once(self) -> None:
        """Compile each of the learner's files once per run, though every test imports it.

        Each test imports the step's modules afresh, and without bytecode files (the
        grader writes none into a learner's folder) Python compiles their source each
        time: about a tenth of a second per step. A code object is immutable, so
        executing the same one again gives a module as fresh as a new compile would.
        """
        from importlib.machinery import SourceFileLoader

        original = SourceFileLoader.source_to_code
        prefix = self._source_text
        compiled: dict[tuple[str, bytes], Any] = {}

        def source_to_code(loader: Any, data: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
            if not (isinstance(path, str) and path.startswith(prefix)) or args or kwargs:
                return original(loader, data, path, *args, **kwargs)
            key = (path, bytes(data))
            if key not in compiled:
                compiled[key] = original(loader, data, path)
            return compiled[key]

        SourceFileLoader.source_to_code = source_to_code  # type: ignore[method-assign,assignment]

    def _record_server_errors(self) -> None:
        """Note each exception the app under test raises, though the client sees a 500."""
        from autograder.server_errors import note_server_errors

        note_server_errors(self._server_errors.append)

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        wanted = set(self.job.only)
        keep = [item for item in items if _test_name(item) in wanted]
        dropped = [item for item in items if _test_name(item) not in wanted]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        if self.job.canary and keep:
            _add_canary(keep, self.job.canary)
        items[:] = keep

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.job.remote:
            self._probe_remote()
            return
        for name in self.step.modules:
            self.emit("import", module=name)
            try:
                self.import_fresh(name)
            except BaseException as exc:  # SystemExit and friends included, on purpose
                message = explain_import_failure(exc, self.source / f"{name}.py", self.source)
                self.emit("import_error", module=name, message=message)
                self._events.close()
                # Nothing else can run without the module; the parent reports the rest.
                os._exit(0)
        self.emit("imported")

    def _probe_remote(self) -> None:
        """Start the app once in a process of its own: a module that cannot be imported
        is reported once, as a grading child that imports it reports it."""
        from autograder import remote

        self.emit("import", module=self.step.modules[-1])
        try:
            remote.probe(self.step, self.source)
        except remote.ImportProblem as problem:
            self.emit("import_error", module=self.step.modules[-1], message=str(problem))
            self._events.close()
            os._exit(0)
        self.emit("imported")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        name = _test_name(item)
        self.emit("start", test=name, item=item.nodeid)
        started = time.perf_counter()
        self._outcomes.pop(item.nodeid, None)
        self._server_errors.clear()
        self._remote_served = None
        self._remote_servers = []
        result = yield
        explanation = self._outcomes.get(item.nodeid, Explanation("passed", ""))
        output = self._printed.pop(item.nodeid, "")
        self.emit(
            "result",
            test=name,
            item=item.nodeid,
            outcome=explanation.outcome,
            message=explanation.message,
            symptom=explanation.symptom,
            waited=explanation.waited,
            duration=round(time.perf_counter() - started, 4),
            output=output[-2000:],
        )
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Iterator[pytest.TestReport]:
        report: pytest.TestReport = yield
        if report.capstdout:
            self._printed[item.nodeid] = report.capstdout  # cumulative over the phases
        if report.failed and item.nodeid not in self._outcomes and call.excinfo is not None:
            reported = getattr(call.excinfo.value, "explanation", None)
            if self.job.remote and isinstance(reported, Explanation):  # remote.ServerFailure
                explanation = reported
            elif self._remote_served is not None:  # app_url's app, in a process of its own
                explanation = self._remote_served.explain(call.excinfo.value)
            else:
                explanation = explain_test_failure(
                    call.excinfo.value, self.source, self.step.given, list(self._server_errors)
                )
            changed = self._changed_environment()
            if changed and explanation.outcome == "failed":
                explanation = replace(
                    explanation,
                    message=f"{explanation.message} (The test set {changed}.)",
                )
            self._outcomes[item.nodeid] = explanation
        return report

    def _changed_environment(self) -> str:
        """The environment variables this test set, as `A="1", B="x"`, for a message."""
        scratch = tempfile.gettempdir()
        changed = [
            f"{name}={json.dumps(value)}"
            for name, value in sorted(os.environ.items())
            if self._environment.get(name) != value
            and not name.startswith("PYTEST_")
            and not value.startswith(scratch)  # a scratch file's path says nothing
        ]
        return ", ".join(changed)

    @contextlib.contextmanager
    def _app_starting(self) -> Iterator[None]:
        """Tell the engine that a remote job starts the app's process, then that it is
        done (serving or not): that time is the grader's, not the test's."""
        self.emit("app_starting")
        try:
            yield
        finally:
            self.emit("app_serving")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.emit("done")
        self._events.close()

    # -- fixtures for the graded tests ------------------------------------------------

    @pytest.fixture
    def exercise(self) -> Callable[[str], ModuleType]:
        """Import one of the step's modules, fresh for this test: `exercise("app")`."""
        if self.job.remote:  # autograder.remote: the engine sends only `client` tests
            raise RuntimeError("a remote job imports none of the submission's modules")
        return self.import_fresh

    @pytest.fixture
    def app(self, exercise: Callable[[str], ModuleType]) -> Any:
        """The step's FastAPI app, from a fresh import of the graded module."""
        module_name, _, attribute = self.step.app.partition(":")
        module = exercise(module_name)
        if not hasattr(module, attribute):
            raise AssertionError(missing_app(module_name, attribute))
        return getattr(module, attribute)

    @pytest.fixture
    def client(self, request: pytest.FixtureRequest) -> Iterator[Any]:
        """A TestClient on the app, inside its lifespan (start-up and shut-down run).

        In a remote job, an httpx client on the app served by a process of its own.
        """
        if self.job.remote:
            from autograder import remote

            with remote.client(self.step, self.source, self._app_starting) as http:
                self._remote_servers.append(http.app)
                yield http
            return
        from fastapi.testclient import TestClient

        with TestClient(request.getfixturevalue("app")) as test_client:
            yield test_client

    @pytest.fixture
    def app_url(self, request: pytest.FixtureRequest) -> Iterator[str]:
        """The step's app, fresh, under a real uvicorn server on loopback: its base URL.

        Where the test file has a fixture `app_settings` giving `(MODULE, VALUES)`, the
        app's MODULE.get_settings answers MODULE.Settings(**VALUES); with a fixture
        `app_overrides` giving `[("module:name", "coursekit.m:f")]`, the app's dependency
        module.name answers the course's m.f. In a remote job the app is served by a
        process of its own (`autograder.remote.serving`), set up the same way.
        """
        with self._serving(request, {}, FILE_SETTINGS) as base_url:
            yield base_url

    @pytest.fixture
    def app_server(
        self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
    ) -> Callable[..., contextlib.AbstractContextManager[str]]:
        """`with app_server({"NAME": "value"}) as base_url:` starts the step's app as
        `app_url` does, once these environment variables are set (as an operator would
        set them before starting it). Here they stay set until the test ends.

        `settings=` replaces the VALUES of the test file's `app_settings` for this app
        (a dict), or, with None, leaves the app's get_settings as it is: the app then
        reads its settings from the environment, as when it is deployed.

        `patches=[("module:name", "coursekit.m:f")]` makes the name `name` of the step's
        module `module` the course's m.f before the app starts (step 04's lifespan calls
        a `load_model` that fails). `setup=["coursekit.m:f"]` sets the app up for this
        test only: m.f(app, module) is called with the app and its module before it
        starts (`coursekit.app_setups`: routes under /test-only/, fake models).
        """

        def start(
            env: dict[str, str],
            *,
            settings: dict[str, Any] | object | None = FILE_SETTINGS,
            patches: list[tuple[str, str]] | tuple[()] = (),
            setup: list[str] | tuple[()] = (),
        ) -> contextlib.AbstractContextManager[str]:
            if not all(isinstance(a, str) and isinstance(b, str) for a, b in patches):
                raise TypeError('patches must give [("module:name", "coursekit.module:name")]')
            if not all(isinstance(name, str) for name in setup):
                raise TypeError('setup must give ["coursekit.module:name"]')
            if not self.job.remote:
                for name, value in env.items():
                    monkeypatch.setenv(name, value)
            changes = Changes([(a, b) for a, b in patches], list(setup))
            return self._serving(request, env, settings, changes)

        return start

    @contextlib.contextmanager
    def _serving(
        self,
        request: pytest.FixtureRequest,
        env: dict[str, str],
        values: dict[str, Any] | object | None,
        changes: Changes | None = None,
    ) -> Iterator[str]:
        settings = _app_settings(request)
        if values is None:
            settings = None
        elif isinstance(values, dict):
            if settings is None:
                raise TypeError("app_server(settings=...) needs the test file's app_settings")
            settings = (settings[0], values)
        overrides = _app_overrides(request)
        if self.job.remote:
            from autograder import remote

            with remote.serving(
                self.step, self.source, settings, env, overrides, changes, self._app_starting
            ) as served:
                # Kept after the server ends: a test may fail later on what it answered.
                self._remote_served = served
                self._remote_servers.append(served)
                yield served.url
            return
        from autograder.appserver import use_changes, use_overrides, use_settings
        from coursekit.server import serve_app_in_thread

        module_name, _, attribute = self.step.app.partition(":")
        module = self.import_fresh(module_name)
        if not hasattr(module, attribute):
            raise AssertionError(missing_app(module_name, attribute))
        app = getattr(module, attribute)
        if settings:
            use_settings(app, *settings)
        use_overrides(app, overrides)
        cleanups = use_changes(app, module, changes or Changes(), self.step.modules)
        try:
            with serve_app_in_thread(app, timeout_graceful_shutdown=1) as base_url:
                yield base_url
        finally:
            for cleanup in cleanups:
                cleanup()

    @pytest.fixture
    def app_log(self) -> Iterator[Callable[[], list[LogLine]]]:
        """`app_log()`: what the app's own loggers logged at WARNING or above since the test
        began, in order, each a LogLine(level, logger, message) (`autograder.applog`). In a
        remote job, what each app this test started reported from its process."""
        if self.job.remote:
            servers = self._remote_servers
            yield lambda: [line for served in servers for line in served.logged_lines()]
            return
        lines: list[LogLine] = []
        with collecting(lines.append):
            yield lambda: list(lines)

    @staticmethod  # a method of the plugin's instance, pytest warns, may not be per session
    @pytest.fixture(scope="session")
    def graded_folder(request: pytest.FixtureRequest) -> Path:
        """The folder being graded, for a test that runs its files in processes of its
        own (step 12's suites, step 15's deployment) and imports none of them here: in a
        remote job too, where the course's copy of the step is what `import` would find."""
        return folder_being_graded(request.config)

    @pytest.fixture
    def live_server(self, app: Any) -> Iterator[str]:
        """The app under a real uvicorn server on a free loopback port: its base URL."""
        from coursekit.server import serve_in_thread

        with serve_in_thread(app, timeout_graceful_shutdown=1) as base_url:
            yield base_url


def folder_being_graded(config: pytest.Config) -> Path:
    """The `graded_folder` fixture's folder, for the course's code that runs outside a
    fixture (step 15's conftest.py starts its suite runs once the tests are collected)."""
    plugin = config.pluginmanager.get_plugin("autograder-child")
    if not isinstance(plugin, ChildPlugin):
        raise RuntimeError("the graded folder is known only in a grading child")
    return plugin.source


def _app_settings(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]] | None:
    """The test file's `app_settings` fixture's `(MODULE, VALUES)`, checked; None without."""
    try:
        settings = request.getfixturevalue("app_settings")
    except pytest.FixtureLookupError:
        return None
    name, values = settings
    if not isinstance(name, str) or not isinstance(values, dict):
        raise TypeError("app_settings must give (module name, {field: value})")
    return name, values


def _app_overrides(request: pytest.FixtureRequest) -> list[tuple[str, str]]:
    """The test file's `app_overrides` fixture's `[("module:name", "coursekit.m:f")]`."""
    try:
        overrides = request.getfixturevalue("app_overrides")
    except pytest.FixtureLookupError:
        return []
    if not all(isinstance(a, str) and isinstance(b, str) for a, b in overrides):
        raise TypeError('app_overrides must give [("module:name", "coursekit.module:name")]')
    return [(a, b) for a, b in overrides]


def _canary_test() -> None:
    raise AssertionError("the canary fails, always")


def _add_canary(items: list[pytest.Item], name: str) -> None:
    """Put a test that always fails at a random place among `items`.

    An instructor's run (`--source-root`) grades code that may attack the grader in its
    own process: make every test pass (patching how pytest runs or reports tests), or
    write results of its own. Such an attack makes this test pass too, or its result go
    missing, and the parent then gives the step no score. It is built like the graded
    tests (a `pytest.Function` of the same module), so what changes how they run changes
    it. It stops the generic attacks, not one written against this very check.
    """
    parent = items[0].parent
    canary = pytest.Function.from_parent(parent, name=name, callobj=_canary_test)
    items.insert(secrets.randbelow(len(items) + 1), canary)


def _test_name(item: pytest.Item) -> str:
    """The graded test an item belongs to: its function name, without parameters."""
    return getattr(item, "originalname", None) or item.name
