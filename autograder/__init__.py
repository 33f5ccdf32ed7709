"""The course's grader: a pytest plugin that grades each step in a child process."""
