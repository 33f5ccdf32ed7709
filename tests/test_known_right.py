"""Every known-right implementation scores full points: the fairness half of known-wrong.

Each variant (tests/known_right/NN_slug.toml) is a correct implementation written
differently from the solution (sync instead of async, a `JSONResponse` instead of a
returned model, an `Enum` instead of a `Literal`, ...), as edits of the solution. It is
applied to a copy and graded on ALL the step's graded tests: a test that fails one is too
strict about form, which is a bug in the course (a correct learner would lose points).
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
from tests.helpers import (
    ROOT,
    STEPS,
    Edit,
    edits_from_toml,
    replace_counts,
    require_services,
    solution_with_edits,
)

KNOWN_RIGHT = ROOT / "tests" / "known_right"
MINIMUM_PER_STEP = 3
# Steps being built while this set was written: skipped until their file exists, then
# held to the minimum like every other step. Drop an id once its file has landed.
NOT_YET_COVERED: set[str] = set()


@dataclass(frozen=True)
class Variant:
    step: Step
    name: str
    edits: tuple[Edit, ...]

    def apply(self, root: Path) -> Path:
        """A copy of the step's solution under `root`, written this other, correct way."""
        return solution_with_edits(self.step, root, self.edits, self.name)


def load_variants() -> list[Variant]:
    variants = []
    for step in STEPS:
        path = KNOWN_RIGHT / f"{step.slug}.toml"
        if not path.exists():
            continue
        for raw in tomllib.loads(path.read_text(encoding="utf-8"))["variants"]:
            variants.append(Variant(step=step, name=raw["name"], edits=edits_from_toml(raw)))
    return variants


VARIANTS = load_variants()
VARIANT_IDS = [f"{v.step.id}-{v.name}" for v in VARIANTS]


@pytest.fixture(scope="module")
def graded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[Variant, list[Record] | str]:
    """Grade each selected variant once, on all its step's tests, several at a time."""
    selected = [
        item.callspec.params["variant"]
        for item in request.session.items
        if hasattr(item, "callspec")
        and "variant" in item.callspec.params
        and item.originalname == "test_the_variant_scores_full_points"
    ]
    # Folders first, in this thread: pytest's temporary-folder factory is not thread-safe.
    folders = [tmp_path_factory.mktemp(variant.step.id) for variant in selected]

    def grade_one(variant: Variant, scratch: Path) -> list[Record] | str:
        try:
            folder = variant.apply(scratch)
        except AssertionError as error:
            # One stale edit fails its own variant, not every variant of the run.
            return str(error)
        return grade_step(variant.step, Settings(source=lambda step: folder))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(selected, pool.map(grade_one, selected, folders), strict=True))


@pytest.mark.parametrize("step", STEPS, ids=[step.slug for step in STEPS])
def test_each_step_has_enough_known_right_implementations(step: Step) -> None:
    if step.id in NOT_YET_COVERED and not (KNOWN_RIGHT / f"{step.slug}.toml").exists():
        pytest.skip(f"step {step.id} is being built: its known-right set comes with it")
    count = sum(variant.step == step for variant in VARIANTS)
    assert count >= MINIMUM_PER_STEP, f"step {step.id} has {count} known-right implementations"


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_the_variant_edits_only_learner_files_once_each(variant: Variant, tmp_path: Path) -> None:
    for edit in variant.edits:
        module = edit.file.removesuffix(".py")
        assert module not in variant.step.given, (
            f"{variant.name!r}: {edit.file} is given (course.toml): a learner does not edit it"
        )
    for edit, count in replace_counts(variant.step, variant.edits):
        # An edit that changes nothing proves nothing: the variant would be the solution.
        assert edit.replace != edit.with_ or edit.content is not None, (
            f"{variant.name!r}: an edit of {edit.file} replaces a text with itself"
        )
        assert count == 1, (
            f"{variant.name!r}: the text to replace occurs {count} times in "
            f"solutions/{variant.step.slug}/{edit.file} (after the edits before it), "
            f"not exactly once: {edit.replace[:80]!r}"
        )
    folder = variant.apply(tmp_path)
    changed = [
        edit.file
        for edit in variant.edits
        if (folder / edit.file).read_bytes() != (variant.step.solution_dir / edit.file).read_bytes()
    ]
    assert changed, f"{variant.name!r}: the edits leave the solution as it is"


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_the_variant_scores_full_points(
    graded: dict[Variant, list[Record] | str], variant: Variant
) -> None:
    require_services(variant.step)
    records = graded[variant]
    if isinstance(records, str):
        pytest.fail(records, pytrace=False)
    assert len(records) == len(variant.step.tests), "every graded test of the step must run"
    failed = [record for record in records if not record.passed]
    score = sum(record.score for record in records)
    most = sum(record.points for record in records)
    if failed:
        pytest.fail(
            f"{variant.name!r} is correct but scores {score}/{most} on step {variant.step.id}: "
            "a graded test is too strict about form (or the variant is not correct):\n"
            + "\n".join(f"- {r.test} [{r.outcome}]: {r.message}" for r in failed),
            pytrace=False,
        )


# An instructor's run grades the `client` tests of an `over_http` step over HTTP, the app
# in a process of its own (autograder/remote.py): every variant scores full points there too.
OVER_HTTP = [variant for variant in VARIANTS if http_only_tests(variant.step)]


@pytest.mark.parametrize("variant", OVER_HTTP, ids=[f"{v.step.id}-{v.name}" for v in OVER_HTTP])
def test_the_variant_scores_full_points_over_http(variant: Variant, tmp_path: Path) -> None:
    over_http = http_only_tests(variant.step)
    folder = variant.apply(tmp_path)
    settings = Settings(
        source=lambda step: folder, select=lambda step, test: test in over_http, sandboxed=True
    )
    records = grade_step(variant.step, settings)
    assert {record.test for record in records} == over_http
    failed = [f"- {r.test} [{r.outcome}]: {r.message}" for r in records if not r.passed]
    assert not failed, f"{variant.name!r} over HTTP:\n" + "\n".join(failed)
