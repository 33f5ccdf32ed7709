"""Step 07: the SQLite file the jobs live in (given: read it, do not edit it).

One table, one row per job; texts and results are stored as JSON text. Every use opens
its own short-lived connection with `connect` (see the lesson for why).
"""

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    texts TEXT NOT NULL,
    results TEXT,
    error TEXT
)
"""
# Seconds a connection waits for another one's write lock before it gives up with
# "database is locked" (SQLite's busy timeout).
BUSY_TIMEOUT = 10.0


def connect(database_path: Path) -> sqlite3.Connection:
    """A new connection to the jobs database, its rows readable by column name.

    A connection may only be used in the thread that opened it (check_same_thread), and
    the route and the job run in different threads: each use opens its own.
    """
    connection = sqlite3.connect(database_path, timeout=BUSY_TIMEOUT)
    connection.row_factory = sqlite3.Row
    # In WAL mode, NORMAL syncs at checkpoints instead of at every commit: the file
    # cannot be corrupted, and only a power cut or an OS crash can undo the last commits.
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def init_database(database_path: Path) -> None:
    """Create the jobs table if it does not exist yet, in write-ahead-log mode."""
    with closing(connect(database_path)) as connection, connection:
        # WAL is a property of the file, kept once set: polls (readers) then never wait
        # for a job's write, and a write never waits for a poll.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(SCHEMA)


@contextmanager
def kept_open(database_path: Path) -> Iterator[None]:
    """Hold one idle connection to the database for as long as the block runs.

    In WAL mode, SQLite copies the log into the database file and syncs it to disk (a
    checkpoint) whenever the last connection to the file closes. With a connection per
    use, that would be after every write; with this one open, checkpoints happen only
    when the log has grown (every 1,000 pages).
    """
    with closing(connect(database_path)) as connection:
        connection.execute("SELECT 1 FROM jobs LIMIT 1").fetchall()  # opens the log
        yield
