"""The website and the apps' /docs, rendered by a real browser, offline.

Headless Chromium opens the built site (from a loopback server and as files) and a
step's app under uvicorn, and records every request: the pages must render and must
fetch nothing that fails and nothing from another host. Screenshots land in
`build/screenshots/` for a human to look at. Without Chromium the tests are skipped,
except on CI (`CI` set), where a missing browser is a failure.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from coursekit.docs import add_offline_docs
from coursekit.server import serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "build" / "screenshots"
LESSONS = sorted(ROOT.glob("lessons/[0-9][0-9]_*/*.ipynb"))
SOLUTION_APPS = sorted(ROOT.glob("solutions/[0-9][0-9]_*/app.py"))
EXERCISES = sorted(p.parent for p in ROOT.glob("exercises/[0-9][0-9]_*/README.md"))
SITE_NAME = "FastAPI for ML serving and LLM backends"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    # Its imports must find its own folder's modules, not another step's of the same
    # name (two steps have a `service`) that an earlier load left in sys.modules.
    for sibling in path.parent.glob("*.py"):
        if sibling.stem != name:
            sys.modules.pop(sibling.stem, None)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


browser_tool = _load("course_browser", ROOT / "tools" / "browser.py")
site_tests = _load("course_site_tests", ROOT / "tests" / "test_site.py")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    executable = browser_tool.find_chromium()
    if executable is None:
        message = "Chromium is not installed (apt-get install -y chromium); browser checks skipped"
        if os.environ.get("CI"):
            pytest.fail(message.replace("skipped", "required on CI"))
        pytest.skip(message)
    with browser_tool.chromium(executable) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = site_tests.build(ROOT / "mkdocs.yml", site_dir, ROOT)
    assert result.returncode == 0, result.stderr[-5000:]
    return site_dir


@pytest.fixture(scope="module")
def site_url(site: Path) -> Iterator[str]:
    """The built site on a loopback HTTP server (the standard library's)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


def visit_cleanly(
    browser: Any, url: str, ready: str, screenshot: str, *, csp_blocks: bool = False
) -> Any:
    """Open `url`; assert it got ready, with no failed, foreign or erroring request.

    With `csp_blocks`, requests the page's own Content-Security-Policy refused (they
    never leave the browser) and the console lines reporting them are accepted.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    visit = browser.visit(url, ready=ready, timeout=10, screenshot=SCREENSHOTS / screenshot)
    origin = None if url.startswith("file:") else "/".join(url.split("/")[:3])
    tolerated = [r for r in visit.requests.values() if csp_blocks and r.blocked_by_page]
    failed = [r for r in visit.failed_requests if r not in tolerated]
    foreign = [r for r in visit.foreign_requests(origin) if r not in tolerated]
    errors = [
        e for e in visit.errors if not any(r.url in e and "Security Policy" in e for r in tolerated)
    ]
    assert visit.ready, f"{url} never satisfied `{ready}`; errors: {visit.errors}"
    assert failed == [], failed
    assert foreign == [], foreign
    assert errors == []
    return visit


def _in_site(site_url: str | None, site: Path, page: str) -> str:
    return f"{site_url}/{page}" if site_url else (site / page).as_uri()


@pytest.mark.parametrize("served", [True, False], ids=["http", "file"])
def test_home_page_renders_offline(browser: Any, site: Path, site_url: str, served: bool) -> None:
    url = _in_site(site_url if served else None, site, "index.html")
    visit = visit_cleanly(
        browser, url, "document.querySelector('nav.md-nav--primary') !== null", "home.png"
    )
    assert visit.title == SITE_NAME
    assert "How grading works" in visit.dom
    assert 'class="md-nav__link' in visit.dom and "For instructors" in visit.dom


@pytest.mark.skipif(not LESSONS, reason="no lesson notebook yet")
@pytest.mark.parametrize("served", [True, False], ids=["http", "file"])
def test_lesson_page_renders_its_outputs(
    browser: Any, site: Path, site_url: str, served: bool
) -> None:
    page = LESSONS[0].relative_to(ROOT).with_suffix(".html").as_posix()
    visit = visit_cleanly(
        browser,
        _in_site(site_url if served else None, site, page),
        "document.querySelectorAll('.jp-OutputArea-output').length > 0",
        "lesson.png",
    )
    assert visit.title.startswith("Lesson: ") and visit.title.endswith(SITE_NAME)
    assert "md-nav__link--active" in visit.dom
    assert "jp-CodeCell" in visit.dom


# On an exercise page: the inline code of its tables that the browser broke over two
# lines, and where each of the statement's header labels starts.
LAYOUT = """(() => {
  const broken = [...document.querySelectorAll('.md-typeset table code')]
    .filter((code) => code.getClientRects().length > 1).map((code) => code.textContent);
  const labels = [...document.querySelectorAll('.md-typeset strong')]
    .filter((s) => /^(Lesson:|You edit:|Given:|Grade it:|Stuck\\?)$/.test(s.textContent.trim()));
  return {broken, labels: labels.map((s) => [s.textContent, s.getBoundingClientRect().top])};
})()"""


@pytest.mark.parametrize("width", [1280, 600], ids=["wide", "narrow"])
@pytest.mark.parametrize("exercise", EXERCISES, ids=[p.name for p in EXERCISES])
def test_exercise_page_header_and_tables_read_cleanly(
    browser: Any, site: Path, exercise: Path, width: int
) -> None:
    page = site / "exercises" / exercise.name / "index.html"
    visit = browser.visit(page.as_uri(), timeout=10, width=width, measure=LAYOUT)
    broken, labels = visit.measured["broken"], visit.measured["labels"]
    assert broken == [], f"inline code broken over two lines in a table: {broken}"
    texts = [text for text, _ in labels]
    required = ["Lesson:", "You edit:", "Grade it:", "Stuck?"]  # "Given:" where files are given
    assert [text for text in texts if text != "Given:"] == required, labels
    tops = [top for _, top in labels]
    assert len(set(tops)) == len(tops), f"the header labels share a line: {labels}"


# Typing into Material's search box, again on every poll until results show: the search
# worker may still be loading the index on the first attempts.
SEARCH = """(() => {
  const box = document.querySelector('.md-search__input');
  box.focus(); box.value = 'grading';
  box.dispatchEvent(new Event('input', {bubbles: true}));
  box.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true, key: 'g'}));
  return document.querySelectorAll('.md-search-result__item').length > 0;
})()"""


@pytest.mark.parametrize("served", [True, False], ids=["http", "file"])
def test_search_works_offline(browser: Any, site: Path, site_url: str, served: bool) -> None:
    visit = visit_cleanly(
        browser, _in_site(site_url if served else None, site, "index.html"), SEARCH, "search.png"
    )
    assert "md-search-result__item" in visit.dom


class Item(BaseModel):
    text: str


def demo_app() -> FastAPI:
    app = FastAPI(title="Demo", docs_url=None, redoc_url=None)
    add_offline_docs(app)

    @app.post("/predict")
    def predict(item: Item) -> Item:
        return item

    return app


APPS = [pytest.param(demo_app, id="demo")] + [
    pytest.param(
        functools.partial(lambda p: _load(f"_app_{p.parent.name}", p).app, p), id=p.parent.name
    )
    for p in SOLUTION_APPS
]


@pytest.mark.parametrize("make_app", APPS)
def test_swagger_ui_renders_the_operations_offline(browser: Any, make_app: Any) -> None:
    app = make_app()
    paths = list(app.openapi()["paths"])
    with serve_in_thread(app) as base_url:
        visit = visit_cleanly(
            browser,
            f"{base_url}/docs",
            "document.querySelectorAll('.opblock').length > 0",
            f"docs-{app.title}.png",
        )
    for path in paths:
        assert f'data-path="{path}"' in visit.dom, f"Swagger UI shows no operation for {path}"


@pytest.mark.parametrize("make_app", APPS)
def test_redoc_renders_the_operations_offline(browser: Any, make_app: Any) -> None:
    app = make_app()
    paths = list(app.openapi()["paths"])
    with serve_in_thread(app) as base_url:
        visit = visit_cleanly(
            browser,
            f"{base_url}/redoc",
            "document.querySelectorAll('[data-section-id^=\"operation/\"]').length > 0",
            f"redoc-{app.title}.png",
            csp_blocks=True,  # ReDoc's "by Redocly" logo, see coursekit/docs.py
        )
    for path in paths:
        assert path in visit.dom, f"ReDoc shows no operation for {path}"
