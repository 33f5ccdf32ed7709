"""The course catalog: the steps in order, and each graded test's points and hint.

Everything reads it from one file, `course.toml` at the repository root: the grader,
the CLI, the course's own checks and the website. Nothing here imports learner code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOG_FILE = ROOT / "course.toml"
# The only solutions a grading run reads: step 15 grades the learner's suite on the
# course's reference service and mutants of it. grade-class's private grader and the
# Gradescope zip ship these and no other solution.
GRADING_REFERENCES = ("solutions/15_capstone",)


@dataclass(frozen=True)
class GradedTest:
    """One graded test: a test function in the step's test file, with its reward."""

    name: str
    points: int
    hint: str
    section: str  # the lesson section that teaches what the test checks
    # Seconds this test may take, where it does far more than its step's others (None: the
    # step's `timeout`): a limit stops a hang, so it must leave room for a busy machine.
    timeout: float | None = None


@dataclass(frozen=True)
class Step:
    """One step of the course: a lesson, an exercise, its solution and its tests."""

    id: str
    slug: str
    title: str
    modules: tuple[str, ...]  # the step's modules, without ".py", imported before the tests
    given: tuple[str, ...]  # modules shipped complete: the learner reads them, edits the others
    # Given modules with no state that import none of the learner's: imported once per
    # run instead of once per test (tests/test_catalog.py holds them to that).
    shared: tuple[str, ...]
    app: str  # "module:attribute" of the FastAPI app the tests exercise
    timeout: float  # seconds one test may take before it counts as hanging
    models_given: bool  # True once the step's stub ships the Pydantic models ready-made
    # Servers the step's tests need besides the learner's app ("redis": a Redis-compatible
    # server, see coursekit.redis_server). Where one is missing the step says so once.
    services: tuple[str, ...] = field(default=())
    # In an instructor's run, the tests that reach the submission only from outside (over
    # HTTP, or running its files in processes of their own) run in a process of the
    # grader's own, which never imports it (see autograder.remote).
    over_http: bool = False
    tests: tuple[GradedTest, ...] = field(default=())

    @property
    def exercise_dir(self) -> Path:
        return ROOT / "exercises" / self.slug

    @property
    def solution_dir(self) -> Path:
        return ROOT / "solutions" / self.slug

    @property
    def lesson_dir(self) -> Path:
        return ROOT / "lessons" / self.slug

    @property
    def statement(self) -> Path:
        return self.exercise_dir / "README.md"

    @property
    def lesson(self) -> Path:
        return self.lesson_dir / f"{self.slug}.ipynb"

    @property
    def max_points(self) -> int:
        return sum(test.points for test in self.tests)

    def test(self, name: str) -> GradedTest:
        for test in self.tests:
            if test.name == name:
                return test
        raise KeyError(f"step {self.id} declares no graded test named {name!r}")

    def limit(self, name: str) -> float:
        """Seconds the test `name` may take: its own limit, else the step's."""
        own = next((test.timeout for test in self.tests if test.name == name), None)
        return own or self.timeout


@dataclass(frozen=True)
class Catalog:
    title: str
    import_timeout: float  # seconds the learner's modules may take to import
    steps: tuple[Step, ...]

    def step(self, step_id: str) -> Step:
        wanted = step_id.zfill(2) if step_id.isdigit() else step_id
        for step in self.steps:
            if wanted in (step.id, step.slug):
                return step
        known = ", ".join(step.id for step in self.steps)
        raise KeyError(f"no step {step_id!r} in the course (steps: {known})")


@cache
def load_catalog(path: Path = CATALOG_FILE) -> Catalog:
    """Read and check `course.toml`; a malformed catalog fails here, loudly."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    course = data["course"]
    steps = []
    for raw in data["steps"]:
        tests = tuple(
            GradedTest(
                name=test["name"],
                points=int(test["points"]),
                hint=test["hint"].strip(),
                section=test["section"],
                timeout=float(test["timeout"]) if "timeout" in test else None,
            )
            for test in raw.get("tests", [])
        )
        steps.append(
            Step(
                id=raw["id"],
                slug=raw["slug"],
                title=raw["title"],
                modules=tuple(raw.get("modules", ["app"])),
                given=tuple(raw.get("given", [])),
                shared=tuple(raw.get("shared", [])),
                app=raw.get("app", "app:app"),
                timeout=float(raw.get("timeout", course["test_timeout"])),
                models_given=bool(raw.get("models_given", False)),
                services=tuple(raw.get("services", [])),
                over_http=bool(raw.get("over_http", False)),
                tests=tests,
            )
        )
    return Catalog(
        title=course["title"],
        import_timeout=float(course["import_timeout"]),
        steps=tuple(steps),
    )
