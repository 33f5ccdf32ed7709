"""Step 15: `test_service.py` is your suite, not one of the graded tests.

The grader runs your suite in a pytest of its own (see `test_your_suite.py`), against the
course's reference service and versions of it with one bug each. Those runs start as soon
as the graded tests are collected, beside the service's own tests (`test_app.py`).
"""

import pytest

from autograder.child import folder_being_graded

collect_ignore = ["test_service.py"]


def pytest_collection_finish(session: pytest.Session) -> None:
    names = {item.name for item in session.items}
    for item in session.items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "start_runs"):
            module.start_runs(names, folder_being_graded(session.config))
            return
