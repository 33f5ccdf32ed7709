"""The submission's side of an instructor's tests over HTTP: serve the step's app.

    python -m autograder.appserver STEP SOURCE REPORT [--import-only] [--settings JSON]
        [--overrides JSON] [--patches JSON] [--setup JSON]

In an instructor's run (`--source-root`), a step's tests that talk to the app only over
HTTP (`client`, `app_url`, `app_server`) run in a grading process that never imports the
submission (see `autograder.remote`). For each such test, that process starts this one, which puts
SOURCE first on `sys.path`, imports the step's modules as a grading child would, and
serves the app with uvicorn on a free loopback port, its lifespan run. With
`--settings '["MODULE", {VALUES}]'` (the grader's, from the course's test file), the app's
dependency MODULE.get_settings answers MODULE.Settings(**VALUES), as the grader's
`app_url` fixture sets it in a grading child; with `--overrides '[["MODULE:NAME",
"coursekit.M:F"], ...]'`, the app's dependency MODULE.NAME answers the course's M.F;
with `--patches` (the same shape), the name MODULE.NAME is the course's M.F; with
`--setup '["coursekit.M:F", ...]'`, M.F(app, module) sets the app up for the test
(`coursekit.app_setups`: routes for the test only, fake models).

It tells the grader what happens by appending one JSON object a line to REPORT:
`{"imported": true}` once the modules are imported (with `--import-only` it then ends),
`{"listening": PORT}` once it serves, `{"import_error": MESSAGE}` if a module cannot be
imported, `{"server_error": {...}}` (an `Explanation`'s fields) for each exception
the app raises, written before its 500 is sent, and `{"log": {...}}` for each record the
app logs at WARNING or above (`autograder.applog`). This is the only channel from the
submission to the grader; the grader reads it as untrusted input (`autograder.remote`).
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from autograder.applog import as_data, collecting
from autograder.catalog import load_catalog
from autograder.messages import explain_import_failure, explain_test_failure, missing_app
from autograder.server_errors import note_server_errors
from autograder.warm import share_tls_context


def use_settings(app: Any, module_name: str, values: dict[str, Any]) -> None:
    """Make the app's `module_name.get_settings` answer `module_name.Settings(**values)`
    (the grader's `app_url`, in a grading child and here alike)."""
    module = importlib.import_module(module_name)
    configured = module.Settings(**values)
    app.dependency_overrides[module.get_settings] = lambda: configured


def use_overrides(app: Any, overrides: list[tuple[str, str]]) -> None:
    """For each `("module:name", "coursekit.module:name")`, make the app's dependency
    `name` of the step's `module` answer the course's callable instead (the grader's
    `app_url`, with the test file's `app_overrides`: in a grading child and here alike)."""
    for target, replacement in overrides:
        module_name, _, name = target.partition(":")
        dependency = getattr(importlib.import_module(module_name), name, None)
        if dependency is None:
            raise AssertionError(
                f"{module_name}.py must define {name} (a dependency the tests replace)."
            )
        app.dependency_overrides[dependency] = _courses(replacement, "app_overrides")


def use_patches(patches: list[tuple[str, str]], modules: tuple[str, ...]) -> None:
    """For each `("module:name", "coursekit.module:name")`, make `name` in the step's
    `module` the course's callable, before the app starts (the grader's `app_server` with
    `patches=`: in a grading child and here alike)."""
    for target, replacement in patches:
        module_name, _, name = target.partition(":")
        if module_name not in modules:
            raise ValueError(f"patches: {module_name!r} is not a module of the step")
        module = importlib.import_module(module_name)
        if not hasattr(module, name):
            raise AssertionError(f"{module_name}.py must define {name} (a name the tests replace).")
        setattr(module, name, _courses(replacement, "patches"))


@dataclass(frozen=True)
class Changes:
    """What a test changes in the app before it starts, beside its settings and its
    dependencies (the grader's `app_server`, `patches=` and `setup=`)."""

    patches: list[tuple[str, str]] = field(default_factory=list)  # ("module:name", "coursekit.m:f")
    setup: list[str] = field(default_factory=list)  # "coursekit.m:f", called (app, module)

    def options(self) -> tuple[str, ...]:
        """The command-line options that carry them to this process."""
        options: tuple[str, ...] = ()
        if self.patches:
            options += ("--patches", json.dumps(self.patches))
        if self.setup:
            options += ("--setup", json.dumps(self.setup))
        return options

    @classmethod
    def from_options(cls, options: list[str]) -> Changes:
        def value(name: str) -> Any:
            return json.loads(options[options.index(name) + 1]) if name in options else []

        return cls([(a, b) for a, b in value("--patches")], [str(r) for r in value("--setup")])


def use_changes(
    app: Any, module: ModuleType, changes: Changes, modules: tuple[str, ...]
) -> list[Callable[[], object]]:
    """Make the test's changes to the app and its modules (in a grading child and here
    alike): each patch, then each of the course's set-ups, `f(app, module)`. What those
    return, if anything, is each a clean-up to call once the app has stopped (in a
    grading child, where the test's process goes on; here the process ends instead)."""
    use_patches(changes.patches, modules)
    cleanups = []
    for setup in changes.setup:
        cleanup = _courses(setup, "setup")(app, module)
        if callable(cleanup):
            cleanups.append(cleanup)
    return cleanups


def _courses(replacement: str, what: str) -> Any:
    """The course's callable `coursekit.module:name`, never another module's."""
    course_module, _, attribute = replacement.partition(":")
    if not course_module.startswith("coursekit."):  # only the course's own code
        raise ValueError(f"{what}: {replacement!r} is not of coursekit")
    return getattr(importlib.import_module(course_module), attribute)


def main(arguments: list[str]) -> int:
    step_id, source_text, report_path, *options = arguments
    step = load_catalog().step(step_id)
    source = Path(source_text).resolve()
    report = open(report_path, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)

    told = threading.Lock()  # the app may log, or fail, in several threads at once

    def tell(**data: Any) -> None:
        with told:
            report.write(json.dumps(data) + "\n")
            report.flush()

    noted: set[int] = set()

    def server_error(exc: BaseException) -> None:
        if id(exc) in noted:  # noted inside the middleware, then again outside the app
            return
        noted.add(id(exc))
        tell(server_error=asdict(explain_test_failure(exc, source, step.given)))

    # Unbuffered: what the app printed before it answered is in the file when the answer
    # arrives (uvicorn's own log goes to stderr, so only the app's prints are here).
    printed = open(Path(report_path).with_name("printed.txt"), "ab", buffering=0)  # noqa: SIM115
    sys.stdout = io.TextIOWrapper(printed, encoding="utf-8", errors="replace", write_through=True)
    sys.dont_write_bytecode = True
    share_tls_context()  # as in a grading child: the app's clients start as fast there
    sys.path.insert(0, str(source))
    note_server_errors(server_error)
    modules = {}
    for name in step.modules:
        try:
            modules[name] = importlib.import_module(name)
        except BaseException as exc:  # SystemExit and friends included, on purpose
            tell(import_error=explain_import_failure(exc, source / f"{name}.py", source))
            return 0
    tell(imported=True)
    if "--import-only" in options:
        return 0
    module_name, _, attribute = step.app.partition(":")
    app = getattr(modules.get(module_name) or importlib.import_module(module_name), attribute, None)
    if app is None:
        tell(server_error={"outcome": "failed", "message": missing_app(module_name, attribute)})
        return 0
    try:
        if "--settings" in options:
            use_settings(app, *json.loads(options[options.index("--settings") + 1]))
        if "--overrides" in options:
            use_overrides(app, json.loads(options[options.index("--overrides") + 1]))
        module = modules.get(module_name) or importlib.import_module(module_name)
        # Held until the process ends: a clean-up may own what it undoes (an active
        # recording, ended if it were collected), and here the process's end undoes it.
        cleanups = use_changes(app, module, Changes.from_options(options), step.modules)
    except Exception as exc:  # the learner's Settings, say: told as a grading child tells it
        server_error(exc)
        return 0

    async def served(scope: Any, receive: Any, send: Any) -> None:
        # What escapes the app: a lifespan's failure (the test client would raise it into
        # the test), or a request's error raised past the 500 (noted already).
        try:
            await app(scope, receive, send)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                server_error(exc)
            raise

    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                tell(listening=listener.getsockname()[1])

    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY on accepted connections only
    # when the socket says it is TCP, and without it each response waited about 40 ms for
    # the client's delayed acknowledgement (Nagle's algorithm), measured here.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))  # a free port, held from now on: no race for it
    # lifespan "on", not "auto": a start-up that fails stops the server, as it fails the
    # test under the test client; "auto" would log it and serve all the same.
    config = uvicorn.Config(served, lifespan="on", log_level="warning")
    with collecting(lambda line: tell(log=as_data(line))):  # after uvicorn sets up logging
        Server(config).run(sockets=[listener])
    del cleanups
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
