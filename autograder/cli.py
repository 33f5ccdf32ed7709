"""Grading runs as the learner sees them, shared by `pytest exercises/` and the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from autograder import integrity, pristine
from autograder.catalog import Step, load_catalog
from autograder.engine import Settings, grade
from autograder.lastrun import duration as last_duration
from autograder.lastrun import recall, remember
from autograder.messages import show_path
from autograder.platforms import commands as platforms
from autograder.processes import sandbox_warm_process
from autograder.records import Record
from autograder.reports import score_table, step_summary, wrap


def run_grading(
    steps: list[Step],
    *,
    solutions: bool = False,
    source_root: Path | None = None,
    select: dict[str, set[str]] | None = None,
    keyword: str = "",
    json_path: Path | None = None,
    test_timeout: float | None = None,
    verbose: int = 0,
    report_format: str = "gradescope",
    github_output: bool = False,
    import_timeout: float | None = None,
) -> int:
    """Grade `steps`, print each step's summary and the table; 0 if every test passed."""
    select = select or {}
    matches = _keyword_matcher(keyword)
    # A learner's error text may hold any character; a Windows console redirected to a
    # file encodes in cp1252, so print what it cannot encode as "?" instead of crashing.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")

    def chosen(step: Step, test: str) -> bool:
        return (step.id not in select or test in select[step.id]) and matches(test)

    guarded: integrity.Snapshot | None = None
    if source_root is not None:
        sandbox_warm_process()  # a class's submissions share no process, see no secrets
        guarded = _guard_the_grader(steps)
        source = lambda step: source_root / step.slug  # noqa: E731
    elif solutions:
        source = lambda step: step.solution_dir  # noqa: E731
    else:
        source = lambda step: step.exercise_dir  # noqa: E731
    what = "the reference solutions" if solutions else "your exercises"
    if source_root is not None:
        what = show_path(source_root)
    print(f"{load_catalog().title}: grading {what}, {len(steps)} step(s)\n", flush=True)

    def report(step: Step, records: list[Record]) -> None:
        if records or verbose > 0:
            print(step_summary(step, records, verbose) + "\n", flush=True)
        if source_root is None and not solutions:
            remember(step, step.exercise_dir, records)  # for `hint` and `next`

    settings = Settings(
        source=source,
        select=chosen,
        test_timeout=test_timeout,
        import_timeout=import_timeout,
        expected=last_duration,
        sandboxed=source_root is not None,
    )
    records = grade(steps, settings, on_step_done=report)
    if guarded is not None and (changed := guarded.changes()):
        # Every child has been killed by now: nothing of the submission still runs.
        guarded.restore(changed)
        _void(records, changed)
    reported = platforms.write_reports(
        records,
        steps,
        json_path=json_path,
        report_format=report_format,
        github_output=github_output,
    )
    print(score_table(steps, records), flush=True)
    if reported:
        return 0  # GitHub Classroom's reporter judges the result; later steps must run
    return 0 if all(record.passed for record in records) else 1


def _guard_the_grader(steps: list[Step]) -> integrity.Snapshot:
    """Build what the grade depends on, then remember it as it is (see autograder.integrity)."""
    extra: tuple[Path, ...] = ()
    if any(step.id >= "03" for step in steps):
        # Built here, before any submission runs, so none can plant a model of its own
        # in an empty cache; then guarded like the grader's files.
        from coursekit.models import build_missing

        extra = (build_missing(),)
    return integrity.snapshot(extra=extra)


def _void(records: list[Record], changed: list[Path]) -> None:
    """No score for a run whose submission changed the grader's files."""
    shown = ", ".join(show_path(path) for path in changed[:5])
    more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
    message = (
        f"While this submission was graded, files of the grader changed ({shown}{more}). "
        "They have been put back, and a run that changes them scores zero: a submission "
        "writes only in its own folder."
    )
    print(wrap(message, ""), flush=True)
    for record in records:
        record.score, record.outcome, record.message = 0, "failed", message


def _keyword_matcher(keyword: str):  # type: ignore[no-untyped-def]
    """pytest's `-k` expression, matched against graded test names."""
    if not keyword:
        return lambda test: True
    try:
        from _pytest.mark.expression import Expression

        expression = Expression.compile(keyword)
    except Exception:  # an older or newer pytest: fall back to a plain substring
        return lambda test: keyword.lower() in test.lower()

    def matches(test: str) -> bool:
        return expression.evaluate(lambda name, /, **_: name.lower() in test.lower())

    return matches


def main(argv: list[str] | None = None) -> int:
    """`python -m autograder {grade,hint,next}`: see `--help`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    grade_cmd = commands.add_parser("grade", help="grade steps (all by default)")
    grade_cmd.add_argument("steps", nargs="*", help="step ids such as 01 (default: all)")
    grade_cmd.add_argument("--solutions", action="store_true", help="grade solutions/")
    grade_cmd.add_argument("--source-root", type=Path, help="grade DIR/NN_slug/ per step")
    grade_cmd.add_argument("--json", type=Path, help="write results.json here (see --format)")
    grade_cmd.add_argument("--test-timeout", type=float, help="seconds per test")
    grade_cmd.add_argument(
        "-v", "--verbose", action="count", default=0, help="every failure in full, with hints"
    )
    platforms.add_grade_options(grade_cmd)
    hint_cmd = commands.add_parser(
        "hint", help="the code-level hints of a step's failing tests (from the last run)"
    )
    hint_cmd.add_argument("step", help="a step id such as 01")
    commands.add_parser("next", help="the first step not yet at full points")
    watch_cmd = commands.add_parser(
        "watch", help="grade the step you edit at every save (the first unfinished by default)"
    )
    watch_cmd.add_argument("step", nargs="?", help="a step id such as 01")
    pristine_cmd = commands.add_parser(
        "pristine", help="check (or --update) the fingerprints of the shipped stubs"
    )
    pristine_cmd.add_argument("--update", action="store_true", help="rewrite pristine.json")
    platforms.add_commands(commands)
    args = parser.parse_args(argv)
    catalog = load_catalog()

    if args.command == "grade":
        steps = [catalog.step(s) for s in args.steps] if args.steps else list(catalog.steps)
        return run_grading(
            steps,
            solutions=args.solutions,
            source_root=args.source_root.resolve() if args.source_root else None,
            json_path=args.json,
            test_timeout=args.test_timeout,
            verbose=args.verbose,
            report_format=args.report_format,
            github_output=args.github_output,
            import_timeout=args.import_timeout,
        )
    if args.command in platforms.COMMANDS:
        return platforms.run_command(args)
    if args.command == "hint":
        return _hint(catalog.step(args.step))
    if args.command == "pristine":
        return _pristine(update=args.update)
    if args.command == "watch":
        from autograder.watch import watch

        return watch(args.step)
    return _next(list(catalog.steps))


def _graded(step: Step) -> list[Record]:
    """The step's records: from the last run if nothing changed since, else graded now."""
    records = recall(step, step.exercise_dir)
    if records is None:
        records = grade([step])
        remember(step, step.exercise_dir, records)
    return records


def _hint(step: Step) -> int:
    records = _graded(step)
    print(f"Step {step.id}: {step.title}")
    print(f"  statement: {show_path(step.statement)}")
    print(f"  lesson:    {show_path(step.lesson)}\n")
    failing = [record for record in records if not record.passed]
    if not failing:
        print("Every test of this step passes. Well done: on to the next one.")
        return 0
    for record in failing:
        print(f"{record.test} ({record.points} pt)")
        print(wrap(record.message, "  "))
        print(wrap(f"Hint: {record.hint}", "  "))
        print(f'  Lesson section: "{record.section}"\n')
    return 0


def _pristine(update: bool) -> int:
    if update:
        pristine.update()
        print(f"Wrote {show_path(pristine.PRISTINE_FILE)}")
        return 0
    current = pristine.stub_fingerprints()
    recorded = json.loads(pristine.PRISTINE_FILE.read_text(encoding="utf-8"))
    changed = sorted(step for step in current if recorded.get(step) != current[step])
    if changed:
        print(f"Stubs changed since pristine.json was written: steps {', '.join(changed)}.")
        print("Run: python -m autograder pristine --update")
        return 1
    print("pristine.json matches the stubs.")
    return 0


def _next(steps: list[Step]) -> int:
    for step in steps:
        records = _graded(step)
        earned, possible = sum(r.score for r in records), sum(r.points for r in records)
        if earned < possible:
            print(f"Next: step {step.id}, {step.title} ({earned}/{possible} points).")
            print(f"  Read {show_path(step.statement)}, then edit {show_path(step.exercise_dir)}/")
            print(f"  Grade it with: pytest {show_path(step.exercise_dir)}")
            print(f"  Stuck? python -m autograder hint {step.id}")
            return 0
    print("Every step is at full points. Congratulations: the course is complete.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
