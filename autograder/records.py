"""One record per graded test: every report (table, JSON) is rendered from these."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

# Why a test did not pass, so reports can group and phrase failures for a learner.
Outcome = Literal[
    "passed",
    "failed",  # an expectation of the test was not met
    "not_implemented",  # the learner's code still raises NotImplementedError
    "error",  # the learner's code raised another exception
    "import_error",  # the learner's module could not be imported
    "timeout",  # the test (or the import) ran out of time
    "crashed",  # the grading process died (sys.exit, os._exit, a crash)
    "not_run",  # the test never ran (see the message)
    "not_started",  # the step's files are still the stubs as shipped
]


@dataclass
class Record:
    step: str
    step_title: str
    test: str
    points: int  # what the test is worth
    score: int  # what it earned: all or nothing
    outcome: Outcome
    message: str  # for the learner: what was expected, what came back
    hint: str
    section: str
    duration: float = 0.0
    output: str = ""  # what the learner's code printed during the test
    symptom: str = ""  # what this failure shares with others of the step, if anything

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Record:
        return cls(**data)  # type: ignore[arg-type]
