"""The course website builds with `mkdocs build --strict`, offline, with every step on it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(ROOT.glob("lessons/[0-9][0-9]_*/*.ipynb"))
EXERCISES = sorted(ROOT.glob("exercises/[0-9][0-9]_*/README.md"))
SOLUTIONS = sorted(p for p in ROOT.glob("solutions/[0-9][0-9]_*") if p.is_dir())

# URL prefixes that Material's JavaScript bundle holds but only fetches for features this
# site does not use. Anything else pointing at another host fails the check.
DORMANT_URLS = (
    # "repo facts" (stars, forks), fetched only when `repo_url` names a GitHub or GitLab
    # repository; mkdocs.yml sets none
    "https://api.github.com/repos/",
    "https://api.github.com/users/",
    "https://${e}/api/v4/projects/",
    # loaded only on a page with a mermaid diagram (test_no_page_needs_a_cdn_library)
    "https://unpkg.com/mermaid@11/dist/mermaid.min.js",
    # loaded only by browsers without ResizeObserver (none since 2020)
    "https://unpkg.com/resize-observer-polyfill",
)
LOADING_ATTRIBUTES = {
    "src",
    "href",
    "srcset",
    "poster",
    "data",
    "action",
    "formaction",
    "xlink:href",
}
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""", re.IGNORECASE)
# A string that starts with a URL: with a scheme, or protocol-relative with a dotted host.
JS_STRING_URL = re.compile(r"""["'`](https?://[^"'`\s]+|//(?:[\w-]+\.)+[\w-]+[^"'`\s]*)""")
JS_COMMENT = re.compile(r"/\*.*?\*/|(?<![:\w\\/\"'])//[^\n]*", re.DOTALL)


def build(config: Path, site_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `mkdocs build --strict` with this interpreter; return the finished process."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(config),
            "-d",
            str(site_dir),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=900,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The course's own site, built once for this module."""
    site_dir = tmp_path_factory.mktemp("site")
    started = time.monotonic()
    result = build(ROOT / "mkdocs.yml", site_dir, ROOT)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-5000:]}"
    print(f"site built in {time.monotonic() - started:.1f} s")
    yield site_dir


LEARNERS_SERVER = ("http://127.0.0.1:", "http://localhost:")


class _Loads(HTMLParser):
    """What an HTML page makes the browser fetch (not where its links lead)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self._inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag in {"script", "style"}:
            self._inside = tag
        if "style" in values:
            self.styles.append(values["style"])
        if tag == "a":
            # A plain hyperlink loads nothing; still, the site needs none to other hosts,
            # except the learner's own server on this machine ("open /docs there").
            href = values.get("href", "")
            if not href.startswith(LEARNERS_SERVER):
                self.urls.append(href)
            return
        for name in LOADING_ATTRIBUTES & values.keys():
            if name == "srcset":
                self.urls += [part.split()[0] for part in values[name].split(",") if part.strip()]
            elif not (tag == "script" and name == "src" and values[name] == ""):
                self.urls.append(values[name])
            else:
                self.urls.append("<empty script src>")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._inside:
            self._inside = None

    def handle_data(self, data: str) -> None:
        if self._inside == "script":
            self.scripts.append(data)
        elif self._inside == "style":
            self.styles.append(data)


def _foreign(url: str) -> bool:
    url = url.strip()
    return url.startswith(("http:", "https:", "//", "<empty")) or url.startswith("ws")


def _js_urls(code: str) -> list[str]:
    return JS_STRING_URL.findall(JS_COMMENT.sub("", code))


def external_references(site: Path) -> list[str]:
    """Every reference in the built site that would reach another host, as `file: url`."""
    found: list[str] = []
    for path in sorted(site.rglob("*")):
        where = path.relative_to(site).as_posix()
        if path.suffix == ".html":
            page = _Loads()
            page.feed(path.read_text(encoding="utf-8"))
            found += [f"{where}: {url}" for url in page.urls if _foreign(url)]
            for css in page.styles:
                found += [f"{where}: {url}" for url in CSS_URL.findall(css) if _foreign(url)]
            for script in page.scripts:
                found += [f"{where}: {url}" for url in _js_urls(script)]
        elif path.suffix == ".css":
            css = path.read_text(encoding="utf-8")
            found += [f"{where}: {url}" for url in CSS_URL.findall(css) if _foreign(url)]
        elif path.suffix == ".js" and where != "search/search_index.js":
            # (The search index is the pages' text as data, URLs in prose included.)
            urls = _js_urls(path.read_text(encoding="utf-8"))
            found += [f"{where}: {url}" for url in urls if not url.startswith(DORMANT_URLS)]
    return found


def test_site_loads_nothing_from_another_host(site: Path) -> None:
    assert external_references(site) == []


def test_the_scan_finds_what_it_must(tmp_path: Path) -> None:
    # The check above passes on an empty list: prove it would see each kind of load.
    (tmp_path / "page.html").write_text(
        '<link rel="stylesheet" href="https://cdn.example/x.css">'
        '<script src="//cdn.example/x.js"></script><script src=""></script>'
        '<a href="https://example.org/">out</a><img srcset="https://img.example/a.png 2x">'
        '<a href="http://127.0.0.1:8000/docs">your server</a>'
        "<style>@import 'https://fonts.example/f.css';</style>"
        "<script>fetch('https://api.example/v1')</script>",
        encoding="utf-8",
    )
    (tmp_path / "style.css").write_text("a{background:url(https://img.example/b.png)}")
    (tmp_path / "app.js").write_text(
        '/* see https://docs.example */ const u = "https://cdn.example/lib.js";'
    )
    found = external_references(tmp_path)
    assert len(found) == 9, found
    assert not any("docs.example" in entry for entry in found)


def test_no_page_needs_a_cdn_library(site: Path) -> None:
    # Material fetches mermaid from unpkg for a diagram; MathJax would need a CDN too.
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert 'class="mermaid"' not in html, f"{page.name} has a mermaid diagram"


def test_every_lesson_has_a_page_with_outputs_and_a_download(site: Path) -> None:
    for notebook in LESSONS:
        relative = notebook.relative_to(ROOT)
        page = site / relative.with_suffix(".html")
        assert page.exists(), f"no page for {relative}"
        html = page.read_text(encoding="utf-8")
        assert "jp-OutputArea-output" in html, f"{relative}: its page shows no cell output"
        assert f'href="{notebook.name}" download' in html
        published = nbformat.read(site / relative, as_version=4)
        assert published.cells == nbformat.read(notebook, as_version=4).cells


def test_every_exercise_has_a_page(site: Path) -> None:
    for readme in EXERCISES:
        relative = readme.parent.relative_to(ROOT)
        assert (site / relative / "index.html").exists(), f"no page for {relative}/README.md"
        for stub in readme.parent.glob("*.py"):
            assert (site / relative / stub.name).exists(), f"{relative}/{stub.name} not published"


def test_solutions_are_on_instructor_pages_only(site: Path) -> None:
    for folder in SOLUTIONS:
        assert (site / "instructors" / "solutions" / f"{folder.name}.html").exists()
        assert not (site / "solutions").exists()
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    locations = [doc["location"] for doc in index["docs"]]
    assert not [loc for loc in locations if loc.startswith("instructors/solutions/")]


def test_search_results_name_the_step_of_each_lesson(site: Path) -> None:
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    titles = {doc["location"]: doc["title"] for doc in index["docs"]}
    for notebook in LESSONS:
        location = notebook.relative_to(ROOT).with_suffix(".html").as_posix()
        title = titles.get(location)
        assert title is not None and re.match(rf"^Lesson: {notebook.stem[:2]} · \S", title), (
            f"the search result for {location} is titled {title!r}, not after its step"
        )


def test_navigation_follows_course_order(site: Path) -> None:
    labels = re.findall(r"^\s*(\d{2}) · ", (site / "index.html").read_text(encoding="utf-8"), re.M)
    steps = sorted({p.parent.name[:2] for p in LESSONS + EXERCISES})
    assert list(dict.fromkeys(labels)) == steps


# --- the build's handling of notebooks, on a throwaway course ---------------------------


def _notebook(*sources: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.cells = [nbformat.v4.new_markdown_cell("# A lesson")]
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    return notebook


@pytest.fixture
def tiny_course(tmp_path: Path) -> Path:
    """A course with the real site config and one lesson, `lessons/01_tiny/01_tiny.ipynb`."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "lessons" / "01_tiny").mkdir(parents=True)
    nbformat.write(_notebook("print(6 * 7)"), tmp_path / "lessons" / "01_tiny" / "01_tiny.ipynb")
    return tmp_path


def test_a_lesson_that_raises_fails_the_build(tiny_course: Path) -> None:
    lesson = tiny_course / "lessons" / "01_tiny" / "01_tiny.ipynb"
    nbformat.write(_notebook("raise RuntimeError('lesson is broken')"), lesson)
    result = build(tiny_course / "mkdocs.yml", tiny_course / "site", tiny_course)
    assert result.returncode != 0
    assert "01_tiny.ipynb" in result.stderr and "lesson is broken" in result.stderr
    assert not (
        tiny_course / "build" / "executed" / "lessons" / "01_tiny" / "01_tiny.ipynb"
    ).exists()


def test_the_site_shows_the_executed_copy_and_reruns_only_a_stale_one(tiny_course: Path) -> None:
    lesson = tiny_course / "lessons" / "01_tiny" / "01_tiny.ipynb"
    executed = tiny_course / "build" / "executed" / "lessons" / "01_tiny" / "01_tiny.ipynb"
    page = tiny_course / "site" / "lessons" / "01_tiny" / "01_tiny.html"
    # A fresh executed copy whose output the notebook could not produce: shown as is.
    copy = _notebook("print(6 * 7)")
    copy.cells[1].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="from the copy\n")
    ]
    executed.parent.mkdir(parents=True)
    nbformat.write(copy, executed)
    assert build(tiny_course / "mkdocs.yml", tiny_course / "site", tiny_course).returncode == 0
    assert "from the copy" in page.read_text(encoding="utf-8")
    # The notebook changes after its copy was made: the build executes it again.
    os.utime(lesson, (time.time() + 5, time.time() + 5))
    result = build(tiny_course / "mkdocs.yml", tiny_course / "site", tiny_course)
    assert result.returncode == 0, result.stderr
    html = page.read_text(encoding="utf-8")
    assert "from the copy" not in html and "42" in html


def test_a_lesson_whose_server_cannot_run_is_shown_without_outputs(tmp_path: Path) -> None:
    """Where a lesson's server cannot run (Windows), the site shows its code, unexecuted,
    and executes it on a later build where the server runs."""
    import importlib.util

    from coursekit.notebooks import executed_path, is_stale

    spec = importlib.util.spec_from_file_location("course_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    sys.modules["course_hooks"] = hooks  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(hooks)
    finally:
        del sys.modules["course_hooks"]
    lesson = tmp_path / "lessons" / "14_x" / "14_x.ipynb"
    lesson.parent.mkdir(parents=True)
    lesson.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    shown = hooks._shown_unexecuted(lesson, tmp_path)
    assert shown == executed_path(lesson, tmp_path)
    assert shown.read_bytes() == lesson.read_bytes()
    assert is_stale(lesson, shown), "a later build with the server must execute it"
