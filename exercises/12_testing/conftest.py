"""Step 12: `test_service.py` is your work, not one of the graded tests.

The grader runs this folder's graded tests (`test_your_suite.py`); they run your suite
in a separate pytest of its own, once per version of the service. So pytest must not
collect your suite here as if it were graded.
"""

collect_ignore = ["test_service.py"]
