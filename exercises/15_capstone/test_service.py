"""Your test suite for the service of README.md's brief.

Run it on your own service from this folder: `python -m pytest test_service.py --noconftest`.
Grade it with `pytest exercises/15_capstone`: the grader runs it against the course's
reference service and against versions of it with one bug each (see README.md).
"""

pytest_plugins = ["suite_kit"]  # the fixtures: client (the service under test), redis_url

# The keys suite_kit's service knows: carol's allows 3 requests an hour.
ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}
CAROL = {"Authorization": "Bearer key-carol"}

# TODO: write at least 8 tests, each checking one promise of the brief through `client`:
# keys, sessions and who owns them, the stream's end, the rate limit, request ids, jobs
# (lesson: "Testing the service: your suite against mutants").
