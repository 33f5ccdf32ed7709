"""Train the course's models and save them with skops.

Three models, each a scikit-learn `Pipeline` plus a metadata record:

- `tickets`: TF-IDF + logistic regression, support-ticket text -> one of four labels;
- `wine`: standardisation + logistic regression, 13 measurements -> one of three cultivars;
- `embedder`: TF-IDF + truncated SVD + L2 normalisation, text -> a 32-number vector.

The classifiers are fitted on a stratified training split and scored on the held-out
rest, so the metrics in their metadata are honest estimates. Everything is seeded:
the same data and the same seed give the same predictions.

scikit-learn is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
import platform
import uuid
import zipfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from coursekit.datasets import load_tickets, load_wine

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# Bump a version whenever its recipe below changes, so served metadata says so.
MODEL_VERSIONS: dict[str, str] = {"tickets": "1.0.0", "wine": "1.0.0", "embedder": "1.0.0"}
TEST_SIZE = 0.25
EMBEDDING_DIMENSION = 32


class Metrics(TypedDict):
    """Held-out scores of a classifier and the sizes of the two splits."""

    accuracy: float
    macro_f1: float
    n_train: int
    n_test: int


class ModelMetadata(TypedDict):
    """What the course records about a trained model, saved beside it as JSON."""

    name: str
    version: str
    task: str
    seed: int
    trained_at: str
    library_versions: dict[str, str]
    # For classifiers, in the order of the columns of `pipeline.predict_proba`.
    classes: NotRequired[list[str]]
    metrics: NotRequired[Metrics]
    feature_names: NotRequired[list[str]]
    dimension: NotRequired[int]
    n_train: NotRequired[int]


def library_versions() -> dict[str, str]:
    """The versions of the libraries that decide how a saved model loads and behaves."""
    return {
        "scikit-learn": version("scikit-learn"),
        "skops": version("skops"),
        "numpy": version("numpy"),
        "python": platform.python_version(),
    }


def _metadata(name: str, task: str, seed: int, **extra: Any) -> ModelMetadata:
    return ModelMetadata(
        name=name,
        version=MODEL_VERSIONS[name],
        task=task,
        seed=seed,
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        library_versions=library_versions(),
        **extra,
    )


def _held_out_metrics(
    pipeline: Pipeline, x_test: Any, y_test: Sequence[str], n_train: int
) -> Metrics:
    from sklearn.metrics import accuracy_score, f1_score

    predicted = pipeline.predict(x_test)
    return Metrics(
        accuracy=round(float(accuracy_score(y_test, predicted)), 4),
        macro_f1=round(float(f1_score(y_test, predicted, average="macro")), 4),
        n_train=n_train,
        n_test=len(y_test),
    )


def train_text_model(seed: int = 0) -> tuple[Pipeline, ModelMetadata]:
    """Fit the support-ticket classifier; return it with its metadata and held-out metrics."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline

    texts, labels = load_tickets()
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=TEST_SIZE, stratify=labels, random_state=seed
    )
    pipeline = Pipeline(
        [
            # Word pairs such as "not arrived" or "charged twice" carry the meaning.
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ("classifier", LogisticRegression(C=10.0, max_iter=1000)),
        ]
    )
    pipeline.fit(x_train, y_train)
    metadata = _metadata(
        "tickets",
        "text-classification",
        seed,
        classes=[str(label) for label in pipeline.classes_],
        metrics=_held_out_metrics(pipeline, x_test, y_test, len(y_train)),
    )
    return pipeline, metadata


def train_wine_model(seed: int = 0) -> tuple[Pipeline, ModelMetadata]:
    """Fit the wine classifier; return it with its metadata and held-out metrics.

    The pipeline takes rows of the 13 features in `WINE_FEATURES` order.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    wine = load_wine()
    x_train, x_test, y_train, y_test = train_test_split(
        wine.features, wine.labels, test_size=TEST_SIZE, stratify=wine.labels, random_state=seed
    )
    pipeline = Pipeline(
        [
            # The features range from about 0.1 (hue) to over 1000 (proline).
            ("scaler", StandardScaler()),
            ("classifier", LogisticRegression(max_iter=1000)),
        ]
    )
    pipeline.fit(x_train, y_train)
    metadata = _metadata(
        "wine",
        "tabular-classification",
        seed,
        classes=[str(label) for label in pipeline.classes_],
        metrics=_held_out_metrics(pipeline, x_test, y_test, len(y_train)),
        feature_names=list(wine.feature_names),
    )
    return pipeline, metadata


def train_embedder(seed: int = 0) -> tuple[Pipeline, ModelMetadata]:
    """Fit the text embedder on all ticket texts; return it with its metadata.

    Its `transform` maps texts to unit-length vectors of `EMBEDDING_DIMENSION` numbers;
    a text with no word the embedder knows maps to the zero vector.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer

    texts, _ = load_tickets()
    pipeline = Pipeline(
        [
            ("tfidf", TfidfVectorizer(sublinear_tf=True)),
            ("svd", TruncatedSVD(n_components=EMBEDDING_DIMENSION, random_state=seed)),
            # Unit vectors make a dot product a cosine similarity.
            ("normalize", Normalizer(norm="l2")),
        ]
    )
    pipeline.fit(texts)
    metadata = _metadata(
        "embedder", "text-embedding", seed, dimension=EMBEDDING_DIMENSION, n_train=len(texts)
    )
    return pipeline, metadata


TRAINERS: dict[str, Callable[[int], tuple[Pipeline, ModelMetadata]]] = {
    "tickets": train_text_model,
    "wine": train_wine_model,
    "embedder": train_embedder,
}


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    # Readers in other processes see the old file or the new one, never half of one.
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def save_model(pipeline: Pipeline, metadata: ModelMetadata, directory: str | Path) -> Path:
    """Write `<name>.json` (metadata) and `<name>.skops` (the pipeline) into `directory`.

    Both writes are atomic, and the `.skops` file is written last, so once it exists
    the metadata beside it is complete. Returns the path of the `.skops` file.
    """
    import skops.io

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = metadata["name"]
    _write_atomically(
        directory / f"{name}.json",
        lambda path: path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8"),
    )
    skops_path = directory / f"{name}.skops"
    # Compressed, the TF-IDF vocabulary shrinks about twentyfold and loads as fast.
    _write_atomically(
        skops_path,
        lambda path: skops.io.dump(pipeline, path, compression=zipfile.ZIP_DEFLATED),
    )
    return skops_path
