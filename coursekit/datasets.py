"""The course's two data sets, both available offline.

- `load_tickets()`: short customer-support messages labelled `billing`, `technical`,
  `account` or `shipping`. The course wrote them itself; they ship in `data/tickets.csv`.
- `load_wine()`: scikit-learn's bundled wine recognition data (13 chemical measurements
  of 178 wines from three cultivars), which needs no download.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

TICKET_LABELS: tuple[str, ...] = ("billing", "technical", "account", "shipping")

# The wine model's input columns, in the order the model expects them. scikit-learn calls
# the twelfth one "od280/od315_of_diluted_wines"; a slash cannot be a Python attribute,
# and request models declare one field per feature, so the course uses an underscore.
WINE_FEATURES: tuple[str, ...] = (
    "alcohol",
    "malic_acid",
    "ash",
    "alcalinity_of_ash",
    "magnesium",
    "total_phenols",
    "flavanoids",
    "nonflavanoid_phenols",
    "proanthocyanins",
    "color_intensity",
    "hue",
    "od280_od315_of_diluted_wines",
    "proline",
)

WINE_CLASSES: tuple[str, ...] = ("class_0", "class_1", "class_2")


@dataclass(frozen=True)
class WineData:
    """The wine data set: one row of `features` per wine, one label per row in `labels`.

    `features` has shape (178, 13), its columns in `feature_names` order (`WINE_FEATURES`);
    `labels` holds class names such as `"class_0"`, one of `class_names`.
    """

    features: np.ndarray
    labels: list[str]
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]


def load_tickets() -> tuple[list[str], list[str]]:
    """Return the support tickets as `(texts, labels)`, two lists of equal length."""
    texts: list[str] = []
    labels: list[str] = []
    with files("coursekit").joinpath("data", "tickets.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            texts.append(row["text"])
            labels.append(row["label"])
    return texts, labels


def load_wine() -> WineData:
    """Return scikit-learn's bundled wine data with the course's feature and class names."""
    from sklearn.datasets import load_wine as sklearn_load_wine

    bunch = sklearn_load_wine()
    feature_names = tuple(name.replace("/", "_") for name in bunch.feature_names)
    if feature_names != WINE_FEATURES:
        raise RuntimeError(f"scikit-learn's wine columns changed: {feature_names}")
    class_names = tuple(str(name) for name in bunch.target_names)
    labels = [class_names[index] for index in bunch.target]
    return WineData(bunch.data, labels, feature_names, class_names)
