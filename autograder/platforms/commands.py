"""The CLI's platform commands: `grade --format/--github-output`, `gradescope`,
`grade-class` and `classroom-workflow`. Kept apart from `cli.py` so both can change."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from autograder.catalog import Step, load_catalog
from autograder.platforms import FORMATS, append_github_output, classroom_result, write_report
from autograder.records import Record


def add_grade_options(grade_cmd: argparse.ArgumentParser) -> None:
    """The report flags of `grade`: which format `--json` writes, and GitHub's output."""
    grade_cmd.add_argument(
        "--format",
        choices=FORMATS,
        default="gradescope",
        dest="report_format",
        help="the format --json writes: Gradescope's results.json (default), GitHub "
        "Classroom's reporter input, or Exercism's results v3",
    )
    grade_cmd.add_argument(
        "--github-output",
        action="store_true",
        help="append result=<base64 JSON> for GitHub Classroom's reporter to $GITHUB_OUTPUT "
        "(exit status 0 once written: the reporter decides)",
    )
    grade_cmd.add_argument(
        "--import-timeout", type=float, help="seconds the learner's modules may take to import"
    )


def write_reports(
    records: list[Record],
    steps: list[Step],
    *,
    json_path: Path | None,
    report_format: str = "gradescope",
    github_output: bool = False,
) -> bool:
    """Write what the flags ask for; True if GitHub's output was written."""
    if json_path is not None:
        write_report(report_format, records, steps, json_path)
        print(f"Wrote {json_path}")
    if not github_output:
        return False
    target = os.environ.get("GITHUB_OUTPUT")
    if not target:
        print("--github-output: GITHUB_OUTPUT is not set (it is, in a GitHub Actions step)")
        return False
    append_github_output(classroom_result(records, steps), Path(target))
    return True


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gradescope = commands.add_parser("gradescope", help="build Gradescope's autograder zip")
    gradescope.add_argument("--out", type=Path, default=Path("autograder.zip"))
    klass = commands.add_parser(
        "grade-class", help="grade SUBMISSIONS/<student>/ for every student, in parallel"
    )
    klass.add_argument("submissions", type=Path, help="one folder per student, like exercises/")
    klass.add_argument("--out", type=Path, required=True, help="per-student JSON and grades.csv")
    klass.add_argument("--steps", nargs="*", default=[], help="step ids (default: all)")
    klass.add_argument("--jobs", type=int, help="students graded at once (default: CPU count)")
    klass.add_argument(
        "--student-timeout", type=float, default=1800, help="seconds per student, all steps"
    )
    klass.add_argument("--test-timeout", type=float, help="seconds per test")
    klass.add_argument("--import-timeout", type=float, help="seconds per import")
    commands.add_parser(
        "classroom-workflow",
        help="print .github/workflows/classroom.yml for the steps in course.toml",
    )


COMMANDS = ("gradescope", "grade-class", "classroom-workflow")


def run_command(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    if args.command == "gradescope":
        from autograder.platforms.gradescope import build_zip

        build_zip(args.out)
        print(f"Wrote {args.out}: upload it as the assignment's autograder")
        return 0
    if args.command == "grade-class":
        from autograder.platforms.grade_class import grade_class

        steps = [catalog.step(s) for s in args.steps] if args.steps else list(catalog.steps)
        return grade_class(
            args.submissions,
            args.out,
            steps,
            jobs=args.jobs,
            student_timeout=args.student_timeout,
            test_timeout=args.test_timeout,
            import_timeout=args.import_timeout,
        )
    if args.command == "classroom-workflow":
        from autograder.platforms.classroom import workflow

        sys.stdout.write(workflow(list(catalog.steps)))
        return 0
    raise ValueError(args.command)
