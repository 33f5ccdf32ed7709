"""Step 05, solved: the prediction log, one row per prediction, in SQLite."""

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
    connection.execute(
        "INSERT INTO predictions (model, input, output, latency_ms) VALUES (?, ?, ?, ?)",
        (model, json.dumps(model_input), json.dumps(model_output), latency_ms),
    )


def read_predictions(connection: sqlite3.Connection, limit: int) -> list[LoggedPrediction]:
    """The `limit` latest predictions, newest first."""
    rows = connection.execute(
        "SELECT id, model, input, output, latency_ms FROM predictions ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        LoggedPrediction(
            id=row_id,
            model=model,
            input=json.loads(stored_input),
            output=json.loads(stored_output),
            latency_ms=latency_ms,
        )
        for row_id, model, stored_input, stored_output, latency_ms in rows
    ]
