"""Step 05, yours: the prediction log, one row per prediction, in SQLite.

Read README.md in this folder first. Your routes and the given batch routes call
`log_prediction`; GET /predictions calls `read_predictions`.
"""

import json
import sqlite3
from typing import Any

from service_schemas import LoggedPrediction

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    latency_ms REAL NOT NULL
)
"""


def log_prediction(
    connection: sqlite3.Connection,
    model: str,
    model_input: dict[str, Any],
    model_output: dict[str, Any],
    latency_ms: float,
) -> None:
    """Add one prediction to the log (get_connection commits it)."""
    # TODO: insert one row into the predictions table: the model's name, its input and
    # output as JSON text, and the latency; values passed as parameters, never pasted
    # into the SQL. Do not commit here. Lesson: "A prediction log".
    raise NotImplementedError


def read_predictions(connection: sqlite3.Connection, limit: int) -> list[LoggedPrediction]:
    """The `limit` latest predictions, newest first."""
    # TODO: the `limit` most recent rows, newest first, each as a LoggedPrediction with its
    # input and output decoded from JSON. Lesson: "Reading the log".
    raise NotImplementedError
