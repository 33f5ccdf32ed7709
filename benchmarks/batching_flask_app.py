"""The Flask app `batching.py` serves under gunicorn: the same forest, one request at a time.

Run it by hand with `gunicorn -w 1 --chdir benchmarks batching_flask_app:app`.
"""

from __future__ import annotations

from typing import Any

from batching_model import N_FEATURES, predict_rows, train_forest
from flask import Flask, jsonify, request

forest = train_forest()  # at import: gunicorn imports the app once per worker
app = Flask(__name__)


@app.post("/predict")
def predict() -> Any:
    body = request.get_json(silent=True) or {}
    features = body.get("features")
    if not isinstance(features, list) or len(features) != N_FEATURES:
        return jsonify({"detail": f"features must be a list of {N_FEATURES} numbers"}), 422
    [answer] = predict_rows(forest, [features])
    return jsonify(answer)


@app.get("/health")
def health() -> Any:
    return jsonify({"status": "ok"})
