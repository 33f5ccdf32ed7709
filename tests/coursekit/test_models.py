"""Checks of the course's data sets, model training, model loading and embeddings."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from coursekit import models, training
from coursekit.datasets import TICKET_LABELS, WINE_FEATURES, load_tickets, load_wine
from coursekit.embeddings import EMBEDDING_DIMENSION, embed
from coursekit.models import (
    ArtifactIntegrityError,
    UntrustedArtifactError,
    available_models,
    load_count,
    load_model,
    reset_load_counts,
)
from coursekit.training import train_text_model, train_wine_model

SAMPLE_TICKETS = [
    "I was charged twice for my subscription",
    "The app crashes when I open the dashboard",
    "I forgot my password and cannot log in",
    "My parcel has not arrived after two weeks",
]


@pytest.fixture(scope="module", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Build models into a private cache, so these tests never touch the real one."""
    cache = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(models.CACHE_ENV_VAR, str(cache))
        yield cache


def double(values: np.ndarray) -> np.ndarray:
    """A function skops cannot vouch for: it lives in this test module."""
    return values * 2


def test_importing_the_modules_does_not_import_scikit_learn_or_skops() -> None:
    code = (
        "import sys, coursekit.datasets, coursekit.training, coursekit.models, "
        "coursekit.embeddings, coursekit.train; "
        "print(sorted(m for m in ('sklearn', 'skops', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_tickets_are_many_balanced_and_unique() -> None:
    texts, labels = load_tickets()
    assert len(texts) == len(labels) >= 360
    assert len(set(texts)) == len(texts)
    assert all(text.strip() for text in texts)
    counts = Counter(labels)
    assert set(counts) == set(TICKET_LABELS)
    assert max(counts.values()) - min(counts.values()) <= len(labels) * 0.05


def test_wine_data_has_the_course_feature_names() -> None:
    wine = load_wine()
    assert wine.features.shape == (178, len(WINE_FEATURES))
    assert wine.feature_names == WINE_FEATURES
    assert len(wine.labels) == 178
    assert set(wine.labels) == set(wine.class_names) == {"class_0", "class_1", "class_2"}


def test_same_data_and_seed_give_the_same_predictions() -> None:
    first, _ = train_text_model(seed=0)
    second, _ = train_text_model(seed=0)
    assert np.array_equal(first.predict_proba(SAMPLE_TICKETS), second.predict_proba(SAMPLE_TICKETS))
    wine = load_wine()
    first_wine, _ = train_wine_model(seed=0)
    second_wine, _ = train_wine_model(seed=0)
    assert np.array_equal(
        first_wine.predict_proba(wine.features), second_wine.predict_proba(wine.features)
    )


@pytest.mark.parametrize(
    ("name", "classes", "accuracy_range", "n_rows"),
    [
        ("tickets", sorted(TICKET_LABELS), (0.75, 0.97), 420),
        ("wine", ["class_0", "class_1", "class_2"], (0.9, 1.0), 178),
    ],
)
def test_classifier_metadata_is_complete_and_sane(
    name: str, classes: list[str], accuracy_range: tuple[float, float], n_rows: int
) -> None:
    model = load_model(name)
    metadata = model.metadata
    assert metadata["name"] == name
    assert [int(part) for part in model.version.split(".")]
    assert model.classes == classes == [str(c) for c in model.pipeline.classes_]
    metrics = metadata["metrics"]
    low, high = accuracy_range
    assert low <= metrics["accuracy"] <= high
    assert low - 0.05 <= metrics["macro_f1"] <= high
    assert metrics["n_train"] + metrics["n_test"] == n_rows
    assert metrics["n_test"] == pytest.approx(n_rows * training.TEST_SIZE, abs=1)
    assert set(metadata["library_versions"]) == {"scikit-learn", "skops", "numpy", "python"}
    assert datetime.fromisoformat(metadata["trained_at"]).tzinfo is not None


def test_the_loaded_models_predict_the_obvious_cases() -> None:
    tickets = load_model("tickets")
    assert list(tickets.pipeline.predict(SAMPLE_TICKETS)) == [
        "billing",
        "technical",
        "account",
        "shipping",
    ]
    wine = load_model("wine")
    assert wine.metadata["feature_names"] == list(WINE_FEATURES)
    data = load_wine()
    assert wine.pipeline.predict(data.features[:1])[0] == data.labels[0]


def test_unknown_model_names_are_refused() -> None:
    assert available_models() == ["embedder", "tickets", "wine"]
    with pytest.raises(ValueError, match="available"):
        load_model("gpt-5")


def test_every_load_is_counted_even_from_many_threads() -> None:
    load_model("wine")  # make sure it is built before counting
    reset_load_counts()
    assert load_count("wine") == 0
    threads = [threading.Thread(target=load_model, args=("wine",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert load_count("wine") == 8
    assert load_count("tickets") == 0
    reset_load_counts()
    assert load_count("wine") == 0


def test_a_model_with_an_untrusted_function_is_refused(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    wine = load_wine()
    sneaky = make_pipeline(
        FunctionTransformer(double), StandardScaler(), LogisticRegression(max_iter=1000)
    )
    sneaky.fit(wine.features, wine.labels)
    pipeline, metadata = train_wine_model()
    models.save_artifact(pipeline, metadata, tmp_path / "clean")
    models.save_artifact(sneaky, metadata, tmp_path / "sneaky")

    # The same loader accepts a clean model from a directory, so the refusal is specific.
    assert load_model("wine", directory=tmp_path / "clean").classes == metadata["classes"]
    with pytest.raises(UntrustedArtifactError, match=r"test_models\.double"):
        load_model("wine", directory=tmp_path / "sneaky")


def test_a_built_model_records_the_sha256_of_its_file(tmp_path: Path) -> None:
    path = models.build_model("wine", tmp_path)
    metadata = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert metadata["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_model("wine", directory=tmp_path).metadata["sha256"] == metadata["sha256"]
    # The staging folder of the build is gone: only the two files remain.
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["wine.json", "wine.skops"]


def test_a_file_that_changed_after_its_build_is_refused(tmp_path: Path) -> None:
    path = models.build_model("wine", tmp_path)
    other = models.build_model("tickets", tmp_path / "other")
    good = path.read_bytes()
    # Replaced by another valid model file, then damaged by one byte: both are refused
    # before skops parses them, even when this process has parsed those bytes before.
    load_model("tickets", directory=tmp_path / "other")
    for changed in (other.read_bytes(), good[:-1] + bytes([good[-1] ^ 1])):
        path.write_bytes(changed)
        with pytest.raises(ArtifactIntegrityError, match=r"wine\.skops.*SHA-256"):
            load_model("wine", directory=tmp_path)
    path.write_bytes(good)
    assert load_model("wine", directory=tmp_path).classes == ["class_0", "class_1", "class_2"]


def test_a_model_without_a_recorded_sha256_is_refused(tmp_path: Path) -> None:
    path = models.build_model("wine", tmp_path)
    metadata_path = path.with_suffix(".json")
    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    del metadata["sha256"]
    metadata_path.write_text(json.dumps(metadata), encoding="utf-8")
    with pytest.raises(ArtifactIntegrityError, match="records no SHA-256"):
        load_model("wine", directory=tmp_path)


def test_embeddings_have_the_right_shape_and_unit_length() -> None:
    vectors = embed(SAMPLE_TICKETS)
    assert len(vectors) == len(SAMPLE_TICKETS)
    for vector in vectors:
        assert len(vector) == EMBEDDING_DIMENSION
        assert all(isinstance(value, float) for value in vector)
        assert math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-9)
    assert embed([]) == []


def test_embeddings_are_deterministic_and_put_similar_texts_close() -> None:
    first = embed(["where is my parcel", "my parcel is late", "reset my password"])
    assert first == embed(["where is my parcel", "my parcel is late", "reset my password"])
    parcel, late_parcel, password = (np.array(vector) for vector in first)
    assert parcel @ late_parcel > parcel @ password + 0.2
    retrained, _ = training.train_embedder(seed=0)
    assert np.allclose(retrained.transform(["where is my parcel"])[0], first[0])


def test_the_embedder_is_loaded_once_for_many_calls() -> None:
    embed(["warm up"])
    reset_load_counts()
    for _ in range(3):
        embed(["where is my parcel"])
    assert load_count("embedder") == 0


def test_concurrent_first_use_builds_one_consistent_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(models.CACHE_ENV_VAR, str(tmp_path))
    trainings = Counter[str]()

    def counting_trainer(seed: int) -> tuple[object, training.ModelMetadata]:
        trainings["wine"] += 1
        return train_wine_model(seed)

    monkeypatch.setitem(training.TRAINERS, "wine", counting_trainer)
    start = threading.Barrier(6)
    loaded: list[models.LoadedModel] = []

    def first_use() -> None:
        start.wait()
        loaded.append(load_model("wine"))

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(loaded) == 6
    assert trainings["wine"] == 1
    # The lock file that let one process build stays, empty, as filelock leaves it.
    files = sorted(path.name for path in tmp_path.rglob("*") if path.is_file())
    assert files == ["wine.json", "wine.lock", "wine.skops"]
    features = load_wine().features
    expected = loaded[0].pipeline.predict_proba(features)
    for model in loaded[1:]:
        assert model.path == loaded[0].path
        assert np.array_equal(model.pipeline.predict_proba(features), expected)


def test_record_batches_counts_the_rows_of_each_call_of_pipelines_loaded_meanwhile() -> None:
    before = load_model("tickets")
    with models.record_batches() as batches:
        during = load_model("tickets")
        during.pipeline.predict_proba(["one", "two", "three"])
        during.pipeline.predict(["four"])
        before.pipeline.predict(["not recorded: loaded before"])
    after = load_model("tickets")
    after.pipeline.predict(["not recorded: loaded after"])
    assert batches == {"tickets": [3, 1]}
    assert during.pipeline.predict(["same answers"]) == after.pipeline.predict(["same answers"])
