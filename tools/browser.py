"""Open a page in headless Chromium and report what it rendered and what it fetched.

The course's browser checks need three things from a real browser: the rendered DOM
(after JavaScript ran), a screenshot, and every request the page made, with its
outcome. Chromium's DevTools protocol gives all three. It is spoken here over
`--remote-debugging-pipe` (JSON messages separated by NUL bytes on file descriptors
3 and 4), so no driver library and no websocket client is needed: only the standard
library and Debian's `chromium` package.

    python tools/browser.py URL [--wait JS_EXPRESSION] [--screenshot page.png]

prints the page title, the requests it made and any failures.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Without the background-networking flags Chromium phones home at start-up, and on a
# closed network those connections are refused and logged as errors.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
    # Pages opened as files may load their own scripts and frames from the same folder.
    "--allow-file-access-from-files",
)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium executable: `$CHROMIUM` if set, else the first one on PATH, or None."""
    if explicit := os.environ.get("CHROMIUM"):
        return explicit
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class DevToolsError(RuntimeError):
    """Chromium answered a DevTools command with an error, or did not answer in time."""


@dataclass
class Request:
    """One network request a page (or one of its frames or workers) made."""

    url: str
    status: int | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.status is not None and self.status >= 400)

    @property
    def blocked_by_page(self) -> bool:
        """Refused by the page's own Content-Security-Policy: it never left the browser."""
        return self.error == "csp"


@dataclass
class Visit:
    """What a page did: its title and DOM once ready, its requests and its errors."""

    url: str
    title: str = ""
    dom: str = ""
    ready: bool = False
    measured: Any = None
    requests: dict[str, Request] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def failed_requests(self) -> list[Request]:
        return [request for request in self.requests.values() if request.failed]

    def foreign_requests(self, allowed_origin: str | None) -> list[Request]:
        """Requests that left `allowed_origin` (scheme://host:port); files and data: stay."""
        local_schemes = {"file", "data", "blob", "about", "chrome-error"}
        foreign = []
        for request in self.requests.values():
            parts = urlsplit(request.url)
            if parts.scheme in local_schemes:
                continue
            if allowed_origin is None or f"{parts.scheme}://{parts.netloc}" != allowed_origin:
                foreign.append(request)
        return foreign


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe."""

    def __init__(self, executable: str, profile_dir: str) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # Chromium reads commands on descriptor 3 and answers on 4. A small Python
        # trampoline moves the pipe ends there and execs Chromium; a preexec_fn would do
        # the same but is unsafe in a process running threads (uvicorn's, in the tests).
        # The ends are first moved above 4 so that neither is clobbered by the other.
        child_ends = [_above(to_browser_read, 5), _above(from_browser_write, 5)]
        trampoline = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
            "os.close(int(sys.argv[1])); os.close(int(sys.argv[2])); "
            "os.execv(sys.argv[3], sys.argv[3:])"
        )
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                trampoline,
                *map(str, child_ends),
                executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile_dir}",
            ],
            pass_fds=child_ends,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for end in child_ends:
            os.close(end)
        self._next_id = 0
        self._lock = threading.Lock()
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._listeners: list[queue.Queue[dict[str, Any]]] = []
        self._reader = threading.Thread(target=self._read, name="chromium-devtools", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as stream:
            while chunk := stream.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    self._dispatch(json.loads(raw))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._lock:
                reply = self._replies.pop(message["id"], None)
            if reply is not None:
                reply.put(message)
            return
        if message.get("method") == "Target.attachedToTarget":
            # A frame or worker of the page: watch its network too, then let it run
            # (it was paused at start so that its first request is not missed).
            session = message["params"]["sessionId"]
            for method in ("Network.enable", "Runtime.enable", "Runtime.runIfWaitingForDebugger"):
                self._post(method, {}, session)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.put(message)

    def _post(
        self,
        method: str,
        params: dict[str, Any],
        session: str | None,
        reply: queue.Queue[dict[str, Any]] | None = None,
    ) -> None:
        with self._lock:
            self._next_id += 1
            message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
            if reply is not None:
                self._replies[self._next_id] = reply
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send one DevTools command and wait for its result."""
        reply: queue.Queue[dict[str, Any]] = queue.Queue()
        self._post(method, params or {}, session, reply)
        try:
            answer = reply.get(timeout=timeout)
        except queue.Empty:
            raise DevToolsError(f"no answer to {method} within {timeout} s") from None
        if "error" in answer:
            raise DevToolsError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    @contextmanager
    def events(self) -> Iterator[queue.Queue[dict[str, Any]]]:
        """A queue that receives every DevTools event while the block runs."""
        listener: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._listeners.append(listener)
        try:
            yield listener
        finally:
            with self._lock:
                self._listeners.remove(listener)

    def close(self) -> None:
        """Ask Chromium to quit; kill it if it does not."""
        with suppress(DevToolsError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_browser)

    def visit(
        self,
        url: str,
        *,
        ready: str = "true",
        timeout: float = 20.0,
        quiet: float = 0.5,
        screenshot: Path | None = None,
        width: int = 1280,
        height: int = 900,
        measure: str | None = None,
    ) -> Visit:
        """Open `url` in a new tab and wait until the JavaScript `ready` is true.

        Then waits until no request has been in flight for `quiet` seconds, so late
        fetches are recorded too, and returns the page's title, DOM and requests, and
        the value of the JavaScript `measure` (JSON-serialisable) in `measured`.
        """
        visit = Visit(url)
        with self.events() as events:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            sessions = {session}
            try:
                for method in ("Network.enable", "Page.enable", "Runtime.enable", "Log.enable"):
                    self.call(method, session=session)
                self.call(
                    "Target.setAutoAttach",
                    {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
                    session=session,
                )
                self.call(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                    session=session,
                )
                self.call("Page.navigate", {"url": url}, session=session)
                deadline = time.monotonic() + timeout
                loaded = False
                last_activity = time.monotonic()
                while time.monotonic() < deadline:
                    try:
                        event = events.get(timeout=0.1)
                    except queue.Empty:
                        event = None
                    if event is not None:
                        if event.get("method") == "Target.attachedToTarget":
                            sessions.add(event["params"]["sessionId"])
                        if event.get("sessionId") in sessions:
                            last_activity = _record(visit, event, last_activity)
                            loaded = loaded or event.get("method") == "Page.loadEventFired"
                        continue
                    in_flight = any(
                        r.status is None and r.error is None for r in visit.requests.values()
                    )
                    if not loaded or in_flight or time.monotonic() - last_activity < quiet:
                        continue
                    if self._evaluate(ready, session):
                        visit.ready = True
                        break
                if measure is not None:
                    visit.measured = self._evaluate(measure, session)
                visit.title = self._evaluate("document.title", session) or ""
                visit.dom = self._evaluate("document.documentElement.outerHTML", session) or ""
                if screenshot is not None:
                    shot = self.call("Page.captureScreenshot", {"format": "png"}, session=session)
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
            finally:
                self.call("Target.closeTarget", {"targetId": target})
        return visit

    def _evaluate(self, expression: str, session: str) -> Any:
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
        )
        return result.get("result", {}).get("value")


def _above(fd: int, minimum: int) -> int:
    """A duplicate of `fd` numbered `minimum` or more; `fd` itself is closed."""
    duplicate = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, minimum)
    os.close(fd)
    return duplicate


def _record(visit: Visit, event: dict[str, Any], last_activity: float) -> float:
    """Fold one DevTools event into `visit`; return the time of the last network activity."""
    method, params = event.get("method", ""), event.get("params", {})
    if method == "Network.requestWillBeSent":
        visit.requests[params["requestId"]] = Request(params["request"]["url"])
    elif method == "Network.responseReceived":
        request = visit.requests.setdefault(params["requestId"], Request(params["response"]["url"]))
        request.status = params["response"]["status"]
    elif method == "Network.loadingFinished":
        request = visit.requests.get(params["requestId"])
        if request is not None and request.status is None:
            request.status = 200  # file:// answers carry no HTTP status
    elif method == "Network.loadingFailed":
        request = visit.requests.get(params["requestId"])
        if request is not None:
            request.error = params.get("blockedReason") or params.get("errorText") or "failed"
    elif method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        text = details.get("exception", {}).get("description") or details.get("text", "")
        visit.errors.append(f"exception: {text}")
    elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
        visit.errors.append(f"log: {params['entry']['text']} ({params['entry'].get('url', '')})")
    elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
        visit.errors.append(
            "console: "
            + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        )
    else:
        return last_activity
    return time.monotonic()


@contextmanager
def chromium(executable: str | None = None) -> Iterator[Chromium]:
    """A fresh headless Chromium with a throwaway profile, closed when the block ends."""
    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("no Chromium found (install Debian's `chromium` or set $CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="course-chromium-") as profile:
        browser = Chromium(executable, profile)
        try:
            yield browser
        finally:
            browser.close()


def main(argv: list[str]) -> int:
    """Visit one URL and print what happened; exit 1 on a failed or foreign request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--wait", default="true", help="JavaScript that is true once ready")
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args(argv)
    with chromium() as browser:
        visit = browser.visit(args.url, ready=args.wait, screenshot=args.screenshot)
    parts = urlsplit(args.url)
    origin = None if parts.scheme == "file" else f"{parts.scheme}://{parts.netloc}"
    print(f"title: {visit.title}\nready: {visit.ready}")
    for request in visit.requests.values():
        print(f"  {request.status or '-'} {request.error or ''} {request.url}")
    for error in visit.errors:
        print(f"  error: {error}")
    bad = visit.failed_requests + visit.foreign_requests(origin)
    return 1 if bad or visit.errors or not visit.ready else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
