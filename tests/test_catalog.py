"""The catalog (course.toml) and the folders agree: one source of truth, no drift."""

from __future__ import annotations

import ast
import json

import pytest

from autograder.catalog import Step
from tests.helpers import ROOT, STEPS, require_shipped_stubs, step_ids


def graded_test_functions(step: Step) -> list[str]:
    """The test functions defined at the top level of the step's test files."""
    names = []
    for path in sorted(step.exercise_dir.glob("test_*.py")):
        if path.stem in step.modules:
            continue  # the learner's own suite (step 12), not a graded test file
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names += [
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")
        ]
    return names


def lesson_headings(step: Step) -> set[str]:
    notebook = json.loads(step.lesson.read_text(encoding="utf-8"))
    headings = set()
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("#"):
                    headings.add(line.lstrip("#").strip())
    return headings


def test_step_ids_and_slugs_are_in_order_and_unique() -> None:
    ids = [step.id for step in STEPS]
    assert ids == sorted(set(ids)), ids
    for step in STEPS:
        assert step.slug.startswith(f"{step.id}_"), step.slug


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_every_declared_test_exists_and_every_test_is_declared(step: Step) -> None:
    declared = [test.name for test in step.tests]
    found = graded_test_functions(step)
    assert sorted(declared) == sorted(found), (
        f"course.toml and exercises/{step.slug}/test_*.py disagree: "
        f"only in course.toml {sorted(set(declared) - set(found))}, "
        f"only in the test files {sorted(set(found) - set(declared))}"
    )
    assert len(declared) == len(set(declared)), "a test is declared twice"


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_every_test_has_points_a_hint_and_a_real_lesson_section(step: Step) -> None:
    headings = lesson_headings(step)
    for test in step.tests:
        assert test.points > 0, test.name
        assert len(test.hint) > 20, f"{test.name}: the hint is missing or too short"
        assert test.section in headings, (
            f"{test.name} points to the lesson section {test.section!r}, "
            f"which is not a heading of {step.lesson.name}"
        )


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_every_step_has_its_files(step: Step) -> None:
    assert step.lesson.is_file(), step.lesson
    assert step.statement.is_file(), step.statement
    for module in step.modules:
        assert (step.exercise_dir / f"{module}.py").is_file()
        assert (step.solution_dir / f"{module}.py").is_file()


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_exercises_and_solutions_mirror_each_other(step: Step) -> None:
    """Same module files on both sides; tests and the statement live in exercises/ only."""

    def modules(folder):  # type: ignore[no-untyped-def]
        return sorted(
            path.name
            for path in folder.glob("*.py")
            if not path.name.startswith("test_") and path.name != "conftest.py"
        )

    assert modules(step.exercise_dir) == modules(step.solution_dir)
    # A step whose submission is a test suite (12) lists it in `modules`, on both sides.
    stray = [p.name for p in step.solution_dir.glob("test_*.py") if p.stem not in step.modules]
    assert not stray, f"tests belong in exercises/ only: {stray}"


def test_no_stray_step_folders() -> None:
    slugs = {step.slug for step in STEPS}
    for kind in ("lessons", "exercises", "solutions"):
        folders = {p.name for p in (ROOT / kind).iterdir() if p.is_dir() and p.name[:2].isdigit()}
        assert folders == slugs, f"{kind}/ holds {sorted(folders ^ slugs)} unlike course.toml"


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_the_statement_names_the_step_and_its_points(step: Step) -> None:
    text = step.statement.read_text(encoding="utf-8")
    assert f"pytest exercises/{step.slug}" in text
    assert f"({step.max_points} points, {len(step.tests)} tests)" in text, (
        "the statement's points and test count must match course.toml"
    )
    assert f"python -m autograder hint {step.id}" in text


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_stubs_say_what_to_do(step: Step) -> None:
    require_shipped_stubs(step)
    for module in step.modules:
        if module in step.given:
            continue
        text = (step.exercise_dir / f"{module}.py").read_text(encoding="utf-8")
        assert "TODO" in text, f"exercises/{step.slug}/{module}.py has no TODO for the learner"


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_given_modules_are_the_same_on_both_sides(step: Step) -> None:
    assert set(step.given) <= set(step.modules), "`given` lists a module not in `modules`"
    for module in step.given:
        stub = (step.exercise_dir / f"{module}.py").read_bytes()
        solution = (step.solution_dir / f"{module}.py").read_bytes()
        assert stub == solution, f"{module}.py is given, so it must be identical in both folders"
    # The other way round: a module shipped complete is listed as given. Gradescope's
    # assembly takes every module of a submission that is not given (step 15's suggested
    # modules, a helper the learner added), so an unlisted one could be replaced.
    require_shipped_stubs(step)
    for path in sorted(step.exercise_dir.glob("*.py")):
        if path.stem.startswith("test_") or path.name == "conftest.py":
            continue
        solution = step.solution_dir / path.name
        if solution.is_file() and solution.read_bytes() == path.read_bytes():
            assert path.stem in step.given, f"{path.name} is shipped complete: list it in `given`"


# What would make a module unsafe to keep from one test to the next: a cache that
# remembers a call, a registry that collects routes, a name rebound at run time.
STATEFUL_DECORATORS = {"cache", "lru_cache"}
STATEFUL_CALLS = {"APIRouter", "FastAPI"}


def shared_module_problems(step: Step, module: str) -> list[str]:
    """Why `module` of `step` could carry state from one test to the next, if it could."""
    path = step.solution_dir / f"{module}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in filter(None, names):
                top = name.split(".")[0]
                if top in step.modules and top not in step.shared:
                    problems.append(f"imports {top}, which is imported afresh for each test")
        elif isinstance(node, ast.Global):
            problems.append(f"rebinds {', '.join(node.names)} with `global`")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                name = (
                    target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                )
                if name in STATEFUL_DECORATORS:
                    problems.append(f"{node.name} remembers its calls (@{name})")
    for node in tree.body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if isinstance(value, ast.Call):
            func = value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in STATEFUL_CALLS:
                problems.append(f"makes a {name} at import, which the learner's code may add to")
    return problems


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_shared_modules_hold_no_state(step: Step) -> None:
    """A `shared` module is kept for the whole run, so it must be the same for every test."""
    assert set(step.shared) <= set(step.given), "`shared` lists a module that is not given"
    problems = [
        f"{module}.py {problem}"
        for module in step.shared
        for problem in shared_module_problems(step, module)
    ]
    assert not problems, f"step {step.id}: " + "; ".join(problems)


@pytest.mark.parametrize("step", STEPS, ids=step_ids())
def test_services_are_ones_the_grader_knows(step: Step) -> None:
    from autograder.services import KNOWN

    unknown = set(step.services) - set(KNOWN)
    assert not unknown, f"step {step.id} needs {sorted(unknown)}: the grader knows {KNOWN}"


def test_the_shared_module_check_can_fail() -> None:
    """The check above finds each kind of state it names (a check that cannot fail is none)."""
    by_id = {step.id: step for step in STEPS}
    assert any(
        "@lru_cache" in problem for problem in shared_module_problems(by_id["09"], "service")
    )
    assert any(
        "imports deps" in problem for problem in shared_module_problems(by_id["05"], "base_routes")
    )
    assert any(
        "APIRouter" in problem for problem in shared_module_problems(by_id["04"], "serving_routes")
    )


def test_step_12s_limit_leaves_room_for_every_run_of_a_suite() -> None:
    # A hanging suite is stopped run by run (SUITE_TIMEOUT each, WORKERS at a time, the
    # correct service alone first); the step's limit only stops a runner that hangs, so a
    # suite whose every run is slow must still get every run's own verdict.
    import math
    import tomllib

    step = next(step for step in STEPS if step.id == "12")
    tree = ast.parse((step.exercise_dir / "test_your_suite.py").read_text(encoding="utf-8"))
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in {"SUITE_TIMEOUT", "WORKERS"}
    }
    catalog = ROOT / "autograder" / "mutants" / "12_testing" / "mutants.toml"
    versions = tomllib.loads(catalog.read_text(encoding="utf-8"))
    others = len(versions["mutants"]) + len(versions["equivalents"])
    rounds = 1 + math.ceil(others / constants["WORKERS"])
    assert step.timeout > rounds * constants["SUITE_TIMEOUT"], (step.timeout, rounds)


def test_the_readme_lists_every_step() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for step in STEPS:
        assert f"| {step.id} | {step.title} |" in readme, f"README.md: no row for step {step.id}"


def test_the_instructors_guide_counts_the_tests_graded_over_http() -> None:
    # docs/instructors says how much of the grade an instructor's run grades where the
    # submission cannot reach (autograder/remote.py): the figures follow course.toml.
    from autograder.remote import http_only_tests

    steps = STEPS
    tests = [test for step in steps for test in step.tests]
    over = [test for step in steps for test in step.tests if test.name in http_only_tests(step)]
    expected = (
        f"That is {len(over)} of the {len(tests)} graded tests, "
        f"{sum(t.points for t in over)} of the {sum(t.points for t in tests)} points."
    )
    text = (ROOT / "docs" / "instructors" / "index.md").read_text(encoding="utf-8")
    assert expected in " ".join(text.split()), f"docs/instructors should say: {expected!r}"
    empty = [step.id for step in steps if step.over_http and not http_only_tests(step)]
    assert not empty, f"steps {empty} are over_http but no test of theirs reaches it over HTTP only"
    marked = [step.id for step in steps if step.over_http]
    assert marked == ["01", "02", "03", "04", "05", "06", "08", "10", "12", "15"], (
        "docs/instructors names steps 01 to 06, 08, 10, 12 and 15 as graded over HTTP: "
        "update it with course.toml"
    )
