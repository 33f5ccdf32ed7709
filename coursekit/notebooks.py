"""Execute lesson notebooks once, into `build/executed/`, for the checks and the website.

The course's own test runs every lesson notebook and keeps the executed copy; the
website shows those copies with their outputs instead of running the notebooks a
second time, and executes only the ones that are missing or older than their source
(a fresh clone, a lesson just edited). One function does the executing for both, so
both run notebooks the same way: top to bottom, from the notebook's own folder, and
stopping at the first cell that raises.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
CELL_TIMEOUT = 600  # seconds; a lesson cell that runs longer is a bug, not a slow machine


def executed_dir(root: Path = ROOT) -> Path:
    """The folder that mirrors the repository with executed copies of its notebooks."""
    return root / "build" / "executed"


def executed_path(source: Path, root: Path = ROOT) -> Path:
    """Where the executed copy of `source` lives: `build/executed/<its path in the repo>`."""
    return executed_dir(root) / Path(source).resolve().relative_to(root.resolve())


def execute_notebook(
    source: Path, dest: Path | None = None, *, root: Path = ROOT, timeout: int = CELL_TIMEOUT
) -> Path:
    """Run every cell of the notebook `source` and write the executed copy; return its path.

    The kernel starts in the notebook's folder, as it does in Jupyter. A cell that
    raises stops the run with `nbclient.exceptions.CellExecutionError` (its message
    names the cell and the error) and nothing is written, so a failed run never
    leaves a copy that looks up to date. `dest` defaults to `executed_path(source)`.
    """
    source = Path(source).resolve()
    dest = Path(dest) if dest is not None else executed_path(source, root)
    notebook = nbformat.read(source, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(source.parent)}},
    )
    client.execute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: a reader never sees half a notebook.
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            nbformat.write(notebook, handle)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def is_stale(source: Path, dest: Path) -> bool:
    """True when the executed copy `dest` is missing or older than `source`."""
    return not dest.exists() or dest.stat().st_mtime < Path(source).stat().st_mtime


def ensure_executed(source: Path, *, root: Path = ROOT) -> Path:
    """The executed copy of `source`, running the notebook first if the copy is stale."""
    dest = executed_path(source, root)
    if is_stale(source, dest):
        execute_notebook(source, dest, root=root)
    return dest


def error_outputs(notebook_path: Path) -> list[str]:
    """The errors recorded in a notebook's outputs, as `Name: message` lines.

    A copy executed with errors allowed (by hand in Jupyter, say) can still hold them;
    the website refuses to publish such a lesson.
    """
    notebook = nbformat.read(notebook_path, as_version=4)
    return [
        f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
