"""MkDocs hooks: build the course website from the course's own folders.

The lessons, exercise statements and solutions live where learners use them
(`lessons/`, `exercises/`, `solutions/`), not under `docs/`. These hooks put them on
the site and build the navigation in course order, so adding a step needs no edit of
`mkdocs.yml`:

- each lesson notebook becomes a page showing its executed copy from
  `build/executed/` (executed here first when missing or older than the notebook),
  with a link to download the notebook;
- each `exercises/NN_slug/README.md` becomes the exercise page, and the files beside
  it (the stub, the tests) are published so the statement can link to them;
- each `solutions/NN_slug/` becomes a page under "Instructors", left out of search.

The steps come from `course.toml` when it lists them, else from the folder names.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.livereload import LiveReloadServer
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from nbclient.exceptions import CellExecutionError

from coursekit.notebooks import (
    ensure_executed,
    error_outputs,
    executed_dir,
    executed_path,
    is_stale,
)

# A warning on a logger under "mkdocs." fails `mkdocs build --strict`.
log = logging.getLogger("mkdocs.hooks.course")

STEP_FOLDER = re.compile(r"^(\d{2})_(\w+)$")
PUBLISHED_SUFFIXES = {".py", ".md", ".txt", ".json", ".toml", ".csv", ".ipynb"}


@dataclass(frozen=True)
class Step:
    """One numbered step of the course and the files it has on the site."""

    id: str
    folder: str
    title: str
    lessons: tuple[Path, ...]
    exercise: Path | None
    solution_files: tuple[Path, ...]

    @property
    def label(self) -> str:
        return f"{self.id} · {self.title}"


def _root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).absolute().parent


def _ordered_step_folders(root: Path) -> list[tuple[str, str, str | None]]:
    """(id, folder name, title or None) for each step, in course order."""
    course_toml = root / "course.toml"
    if course_toml.exists():
        data = tomllib.loads(course_toml.read_text(encoding="utf-8"))
        listed = data.get("steps") or data.get("step") or []
        if listed:
            steps = []
            for entry in listed:
                step_id, slug = str(entry["id"]).zfill(2), str(entry["slug"])
                folder = slug if slug.startswith(f"{step_id}_") else f"{step_id}_{slug}"
                steps.append((step_id, folder, entry.get("title")))
            return steps
    names = {
        path.name
        for kind in ("lessons", "exercises", "solutions")
        for path in (root / kind).glob("[0-9][0-9]_*")
        if path.is_dir() and STEP_FOLDER.match(path.name)
    }
    return [(name[:2], name, None) for name in sorted(names)]


def _published_files(folder: Path) -> tuple[Path, ...]:
    if not folder.is_dir():
        return ()
    return tuple(
        path
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and path.suffix in PUBLISHED_SUFFIXES
        and not any(part.startswith((".", "__")) for part in path.relative_to(folder).parts)
    )


def discover_steps(root: Path) -> list[Step]:
    """Every step of the course under `root`, in order, with its lessons and files."""
    steps = []
    for step_id, folder, title in _ordered_step_folders(root):
        readme = root / "exercises" / folder / "README.md"
        steps.append(
            Step(
                id=step_id,
                folder=folder,
                title=title or folder[3:].replace("_", " ").capitalize(),
                lessons=tuple(sorted((root / "lessons" / folder).glob("*.ipynb"))),
                exercise=readme if readme.exists() else None,
                solution_files=_published_files(root / "solutions" / folder),
            )
        )
    return steps


# --- configuration ------------------------------------------------------------------

_steps: list[Step] = []
_root_dir: Path | None = None
_notebook_pages: dict[str, Path] = {}  # src_uri of a lesson page -> its source notebook


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Discover the steps and build the navigation from them."""
    global _steps, _root_dir
    root = _root_dir = _root(config)
    _steps = discover_steps(root)
    config.nav = _navigation(_steps)
    # mkdocs-jupyter resolves its cache folder against the working directory; keep it
    # under build/ (gitignored) wherever mkdocs is started from.
    jupyter = config.plugins.get("mkdocs-jupyter")
    if jupyter is not None:
        jupyter.config["cache_dir"] = str(root / "build" / "mkdocs-jupyter-cache")
    return config


def _navigation(steps: list[Step]) -> list[Any]:
    nav: list[Any] = [{"Home": "index.md"}]
    for step in steps:
        section: list[Any] = []
        for notebook in step.lessons:
            title = "Lesson" if len(step.lessons) == 1 else f"Lesson: {notebook.stem}"
            section.append({title: _lesson_uri(step, notebook)})
        if step.exercise is not None:
            section.append({"Exercise": f"exercises/{step.folder}/README.md"})
        if section:
            nav.append({step.label: section})
    solutions = [{step.label: _solution_uri(step)} for step in steps if step.solution_files]
    instructors: list[Any] = [{"For instructors": "instructors/index.md"}]
    if solutions:
        instructors.append({"Solutions": solutions})
    nav.append({"Instructors": instructors})
    return nav


def _lesson_uri(step: Step, notebook: Path) -> str:
    return f"lessons/{step.folder}/{notebook.name}"


def _solution_uri(step: Step) -> str:
    return f"instructors/solutions/{step.folder}.md"


# --- files ----------------------------------------------------------------------------


@event_priority(50)  # before mkdocs-jupyter's on_files, which wraps notebook pages
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the lessons, exercise statements and their files, and solution pages."""
    root = _root(config)
    _notebook_pages.clear()
    for step in _steps:
        for notebook in step.lessons:
            name = notebook.relative_to(root).as_posix()
            if absent := _missing_server(step):
                executed = _shown_unexecuted(notebook, root)
                log.warning("Lesson %s is shown without outputs: %s", name, absent)
            else:
                try:
                    executed = ensure_executed(notebook, root=root)
                except CellExecutionError as error:
                    raise PluginError(f"Lesson {name} raised while executing:\n{error}") from error
            if errors := error_outputs(executed):
                raise PluginError(f"Lesson {name} has error outputs: {'; '.join(errors)}")
            uri = _lesson_uri(step, notebook)
            # A real File rooted in build/executed/, not a generated one: mkdocs-jupyter
            # wraps notebook files and only finds the source path of real ones.
            files.append(_file(config, uri, executed_dir(root)))
            _notebook_pages[uri] = notebook
        if step.exercise is not None:
            for path in _published_files(step.exercise.parent):
                files.append(_file(config, path.relative_to(root).as_posix(), root))
        if step.solution_files:
            files.append(
                File.generated(config, _solution_uri(step), content=_solution_page(step, root))
            )
    return files


def _shown_unexecuted(notebook: Path, root: Path) -> Path:
    """The lesson as its executed copy, without outputs (its cells start a server none
    ships for this system): the site still builds, and shows the code."""
    executed = executed_path(notebook, root)
    if is_stale(notebook, executed):
        executed.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(notebook, executed)
        # Older than the lesson, so a build where the server runs executes it after all.
        before = notebook.stat().st_mtime - 1
        os.utime(executed, (before, before))
    return executed


def _missing_server(step: Step) -> str | None:
    """Why a server the step's lesson starts cannot run here, or None."""
    from autograder.catalog import load_catalog
    from autograder.services import missing

    try:
        return missing(load_catalog().step(step.id))
    except KeyError:  # a folder the catalog does not list yet
        return None


def _file(config: MkDocsConfig, src_uri: str, src_dir: Path) -> File:
    return File(
        src_uri,
        src_dir=str(src_dir),
        dest_dir=config.site_dir,
        use_directory_urls=config.use_directory_urls,
    )


def _solution_page(step: Step, root: Path) -> str:
    folder = root / "solutions" / step.folder
    parts = [
        # A learner searching the site should not stumble on the answers.
        "---\nsearch:\n  exclude: true\n---\n",
        f"# Solution {step.label}\n",
        f"The completed modules of `solutions/{step.folder}/`, which score full points "
        "under `python -m autograder --solutions`.",
    ]
    if step.exercise is not None:
        parts[-1] += f" The task: [exercise {step.id}](../../exercises/{step.folder}/README.md)."
    for path in step.solution_files:
        name = path.relative_to(folder).as_posix()
        language = {".py": "python", ".toml": "toml", ".json": "json"}.get(path.suffix, "text")
        fence = "````" if "```" in (text := path.read_text(encoding="utf-8")) else "```"
        parts.append(f'## `{name}`\n\n{fence}{language} title="{name}"\n{text.rstrip()}\n{fence}')
    return "\n\n".join(parts) + "\n"


# --- pages ----------------------------------------------------------------------------

# nbconvert's page template loads MathJax and mermaid from CDNs (an empty MathJax URL
# still leaves a `<script src="">`); the lessons use neither, and the site must load
# nothing from another host. Both blocks are matched by nbconvert's own markers.
_MATHJAX_BLOCK = re.compile(
    r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->\s*", re.DOTALL
)
_MERMAID_LOADER = re.compile(
    r"<script type=\"module\">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*?</script>\s*",
    re.DOTALL,
)
_DOWNLOAD_ICON = (  # Material Design's "download" icon, inline: no icon font to fetch
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">'
    '<path d="M5 20h14v-2H5m14-9h-4V3H9v6H5l7 7z"/></svg>'
)
_HREF = re.compile(r'(<a\s[^>]*?href=")([^"#?:]+\.(?:md|ipynb))((?:#[^"]*)?")')


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    """Fill the home page's step list and start button from the steps found."""
    if not page.is_homepage:
        return markdown
    first = next((step for step in _steps if step.lessons), None)
    start = (
        f"[Start with step {first.id}: {first.title}]({_lesson_uri(first, first.lessons[0])})"
        "{ .md-button .md-button--primary }"
        if first
        else ""
    )
    return (
        markdown.replace("<!-- start-button -->", start)
        .replace("<!-- steps -->", _steps_table())
        .replace("<!-- grading-example -->", _grading_example(_root_dir))
    )


# The home page's example failure: a real test of step 01 and the message its
# assertion gives for a case-sensitive word count (`expect_fields` in autograder/expect.py).
EXAMPLE_FAILURE = (
    "test_unique_words_ignore_case",
    'POST /analyze for "Cat cat CAT dog": unique_words = 4 (expected 2).',
)


def _grading_example(root: Path | None) -> str:
    """What grading prints, rendered by the grader's own report code, so it cannot drift.

    A learner who has one test of step 01 still failing and has not started step 02.
    """
    if root is None or not (root / "course.toml").is_file():
        return ""
    from autograder.catalog import load_catalog
    from autograder.records import Record
    from autograder.reports import score_table, step_summary

    steps = list(load_catalog(root / "course.toml").steps[:2])
    name, message = EXAMPLE_FAILURE
    if len(steps) < 2 or name not in {test.name for test in steps[0].tests}:
        raise PluginError(f"docs/hooks.py: EXAMPLE_FAILURE names {name}, not a test of step 01")
    records = []
    for step in steps:
        for test in step.tests:
            outcome = "not_started" if step is steps[1] else "passed"
            outcome = "failed" if test.name == name else outcome
            records.append(
                Record(
                    step=step.id,
                    step_title=step.title,
                    test=test.name,
                    points=test.points,
                    score=test.points if outcome == "passed" else 0,
                    outcome=outcome,  # type: ignore[arg-type]
                    message=message if outcome == "failed" else "",
                    hint=test.hint,
                    section=test.section,
                )
            )
    summaries = [step_summary(step, [r for r in records if r.step == step.id]) for step in steps]
    text = "\n\n".join(summaries) + "\n\n" + score_table(steps, records)
    return f"```text\n{text}\n```"


def _steps_table() -> str:
    if not _steps:
        return "*The first steps are being written.*"
    rows = ["| step | lesson | exercise |", "| --- | --- | --- |"]
    for step in _steps:
        lessons = ", ".join(
            f"[{'read' if len(step.lessons) == 1 else nb.stem}]({_lesson_uri(step, nb)})"
            for nb in step.lessons
        )
        exercise = (
            f"[exercise {step.id}](exercises/{step.folder}/README.md)" if step.exercise else ""
        )
        rows.append(f"| **{step.label}** | {lessons} | {exercise} |")
    return "\n".join(rows)


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Make a lesson page self-contained: no CDN scripts, working links, a download."""
    source = _notebook_pages.get(page.file.src_uri)
    if source is None:
        return html
    html = _MATHJAX_BLOCK.sub("", html)
    html = _MERMAID_LOADER.sub("", html)
    html = _HREF.sub(lambda match: _rewrite_link(match, page, files), html)
    button = (
        f'<a href="{source.name}" download title="Download the notebook" '
        f'class="md-content__button md-icon">{_DOWNLOAD_ICON}</a>\n'
    )
    footer = (
        '<div class="admonition tip"><p class="admonition-title">Run this lesson yourself</p>'
        f'<p><a href="{source.name}" download>Download the notebook</a>, or open '
        f"<code>lessons/{source.parent.name}/{source.name}</code> in JupyterLab with "
        "<code>python course.py lab</code>, and run the cells from the top.</p></div>\n"
    )
    return button + html + footer


def _rewrite_link(match: re.Match[str], page: Page, files: Files) -> str:
    """Point a notebook's link to a course file (README.md, .ipynb) at that file's page.

    mkdocs does this for Markdown pages; notebook cells are rendered by nbconvert, so
    their links are resolved here, with the same warning when the target is missing.
    """
    href = match.group(2)
    if urlsplit(href).scheme or href.startswith("/"):
        return match.group(0)
    target_uri = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), href))
    target = files.get_file_from_path(target_uri)
    if target is None:
        log.warning("Lesson '%s' links to '%s', which is not on the site.", page.file.src_uri, href)
        return match.group(0)
    return match.group(1) + target.url_relative_to(page.file) + match.group(3)


@event_priority(50)  # before the search plugin's on_page_context, which indexes the title
def on_page_context(context: dict[str, Any], page: Page, **_: Any) -> dict[str, Any]:
    """Give step pages a title that says which step they belong to.

    The navigation keeps the short "Lesson"; the browser tab and the search results
    (Material's search reads `page.meta["title"]`) get "Lesson: 01 · First ...".
    """
    parent = page.parent
    if parent is not None and parent.title and re.match(r"^\d{2} · ", parent.title):
        page.meta["title"] = f"{page.title}: {parent.title}"  # "Lesson: 01 · ..."
    elif parent is not None and parent.title == "Solutions":
        page.meta["title"] = f"Solution: {page.title}"
    return context


def on_post_build(config: MkDocsConfig) -> None:
    """Publish each lesson's notebook (outputs stripped, as in git) beside its page."""
    site = Path(config.site_dir)
    for uri, source in _notebook_pages.items():
        target = site / uri
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def on_serve(server: LiveReloadServer, config: MkDocsConfig, builder: Any) -> LiveReloadServer:
    """Rebuild when a lesson, an exercise, a solution or the step list changes."""
    root = _root(config)
    for name in ("lessons", "exercises", "solutions", "course.toml"):
        if (root / name).exists():
            server.watch(str(root / name))
    return server
