"""The model the batching benchmark serves: a random forest of 50 trees on the wine data.

Trained at start-up from scikit-learn's bundled wine data (offline, about 0.2 s), the
same way in every server of the benchmark, so each serves the very same model.
"""

from __future__ import annotations

import warnings
from typing import Any

from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier

N_FEATURES = 13

# A forest called from a thread other than the one that imported scikit-learn (the
# threadpool, asyncio.to_thread) warns once per tree that its configuration is not
# propagated to joblib. The forest uses no configuration here, and writing 50 warnings
# per request to stderr would cost more than the prediction itself.
warnings.filterwarnings("ignore", message="`sklearn.utils.parallel.delayed` should be used")


def train_forest() -> RandomForestClassifier:
    """RandomForestClassifier(50 trees), seeded; n_jobs=None: one thread per call."""
    data = load_wine()
    return RandomForestClassifier(n_estimators=50, random_state=0).fit(data.data, data.target)


def predict_rows(forest: RandomForestClassifier, rows: list[list[float]]) -> list[dict[str, Any]]:
    """One {"label", "confidence"} per row, from ONE predict_proba call."""
    probabilities = forest.predict_proba(rows)
    return [{"label": int(p.argmax()), "confidence": float(p.max())} for p in probabilities]


def sample_rows() -> list[list[float]]:
    """The wine data's rows, as a client would send them."""
    return load_wine().data.tolist()
