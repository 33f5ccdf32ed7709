"""`python -m autograder`: grade, hint, next."""

import sys

from autograder.cli import main

sys.exit(main())
