"""Every known-wrong implementation fails at least one graded test of its step.

Each mistake is an edit of the solution (tests/known_wrong/NN_slug.toml), applied to
a copy; the graded tests must catch it. A mistake no test catches means a graded test
does not discriminate, which is a bug in the course.
"""

from __future__ import annotations

import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from autograder.catalog import Step
from autograder.engine import Settings, grade_step
from autograder.records import Record
from autograder.remote import http_only_tests
from tests.helpers import ROOT, STEPS, Edit, require_services, solution_with_edits

KNOWN_WRONG = ROOT / "tests" / "known_wrong"
MINIMUM_PER_STEP = 3


@dataclass(frozen=True)
class Mistake:
    step: Step
    name: str
    file: str
    replace: str
    with_: str
    caught_by: tuple[str, ...]

    def apply(self, root: Path) -> Path:
        """A copy of the step's solution under `root`, with this mistake made."""
        if not self.replace:  # no `replace`: `with` is the whole file (a learner's suite)
            edit = Edit(file=self.file, content=self.with_)
        else:
            edit = Edit(file=self.file, replace=self.replace, with_=self.with_)
        return solution_with_edits(self.step, root, [edit], self.name)


def load_mistakes() -> list[Mistake]:
    mistakes = []
    for step in STEPS:
        path = KNOWN_WRONG / f"{step.slug}.toml"
        if not path.exists():
            continue
        for raw in tomllib.loads(path.read_text(encoding="utf-8"))["mistakes"]:
            mistakes.append(
                Mistake(
                    step=step,
                    name=raw["name"],
                    file=raw["file"],
                    replace=raw.get("replace", ""),
                    with_=raw["with"],
                    caught_by=tuple(raw.get("caught_by", [])),
                )
            )
    return mistakes


MISTAKES = load_mistakes()


@pytest.fixture(scope="module")
def graded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[Mistake, list[Record]]:
    """Grade each selected mistake once, several at a time (each grading is a child process)."""
    selected = [
        item.callspec.params["mistake"]
        for item in request.session.items
        if hasattr(item, "callspec") and "mistake" in item.callspec.params
    ]

    # Folders first, in this thread: pytest's temporary-folder factory is not thread-safe
    # (made from the pool, the first ones raced to create the base folder and failed).
    folders = [tmp_path_factory.mktemp(mistake.step.id) for mistake in selected]

    def grade_one(mistake: Mistake, scratch: Path) -> list[Record]:
        folder = mistake.apply(scratch)
        # Where the mistake names the tests that catch it, running those proves it is
        # caught; the step's other tests would only add minutes to every check.
        named = set(mistake.caught_by)
        return grade_step(
            mistake.step,
            Settings(
                source=lambda step: folder, select=lambda step, test: not named or test in named
            ),
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(selected, pool.map(grade_one, selected, folders), strict=True))


@pytest.mark.parametrize("step", STEPS, ids=[step.slug for step in STEPS])
def test_each_step_has_enough_known_wrong_implementations(step: Step) -> None:
    count = sum(mistake.step == step for mistake in MISTAKES)
    assert count >= MINIMUM_PER_STEP, f"step {step.id} has {count} known-wrong implementations"


@pytest.mark.parametrize("mistake", MISTAKES, ids=[f"{m.step.id}-{m.name}" for m in MISTAKES])
def test_the_graded_tests_catch_the_mistake(
    graded: dict[Mistake, list[Record]], mistake: Mistake
) -> None:
    assert mistake.caught_by, f"{mistake.name}: name the tests that must catch it (caught_by)"
    require_services(mistake.step)
    records = graded[mistake]
    failed = {record.test for record in records if not record.passed}
    assert failed, f"no graded test of step {mistake.step.id} catches: {mistake.name}"
    missed = set(mistake.caught_by) - failed
    assert not missed, f"{mistake.name}: expected these tests to fail too: {sorted(missed)}"
    # A caught mistake must be caught by an expectation, not by a crash of the grader.
    broken = [r.test for r in records if r.outcome in {"import_error", "crashed", "not_run"}]
    assert not broken, f"{mistake.name}: the copy did not even run: {broken}"


# An instructor's run grades the `client` tests of an `over_http` step over HTTP, the app
# in a process of its own (autograder/remote.py): the tests that catch a mistake there
# catch it so too.
OVER_HTTP = [m for m in MISTAKES if set(m.caught_by) & http_only_tests(m.step)]


@pytest.mark.parametrize("mistake", OVER_HTTP, ids=[f"{m.step.id}-{m.name}" for m in OVER_HTTP])
def test_the_mistake_is_caught_over_http_too(mistake: Mistake, tmp_path: Path) -> None:
    named = set(mistake.caught_by) & http_only_tests(mistake.step)
    folder = mistake.apply(tmp_path)
    settings = Settings(
        source=lambda step: folder, select=lambda step, test: test in named, sandboxed=True
    )
    records = grade_step(mistake.step, settings)
    missed = [record.test for record in records if record.passed]
    assert not missed, f"{mistake.name}: over HTTP these tests pass: {missed}"
    broken = [r.test for r in records if r.outcome in {"import_error", "crashed", "not_run"}]
    assert not broken, f"{mistake.name}: the copy did not even run over HTTP: {broken}"
