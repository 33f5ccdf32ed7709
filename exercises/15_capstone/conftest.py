"""Step 15: `test_service.py` is your suite, not one of the graded tests.

The grader runs your suite in a pytest of its own (see `test_your_suite.py`), against the
course's reference service and versions of it with one bug each.
"""

collect_ignore = ["test_service.py"]
