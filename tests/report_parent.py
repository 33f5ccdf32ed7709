"""`python -m tests.report_parent FILE`: write this process's parent's pid to FILE.

A check of `autograder.processes.run_module` runs it to learn who started it.
"""

import os
import sys
from pathlib import Path

Path(sys.argv[1]).write_text(str(os.getppid()), encoding="utf-8")
