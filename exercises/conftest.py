"""Turns `pytest exercises/` into the course's grader (see autograder/plugin.py).

You do not need to read or change this file.
"""

from autograder.plugin import pytest_addoption, pytest_cmdline_main, pytest_configure

__all__ = ["pytest_addoption", "pytest_cmdline_main", "pytest_configure"]
