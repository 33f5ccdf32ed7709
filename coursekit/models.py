"""Load the course's trained models: one loader for the lessons, exercises and solutions.

    from coursekit.models import load_model

    model = load_model("tickets")
    model.pipeline.predict_proba(["I was charged twice"])  # columns in model.classes order

The first `load_model(name)` on a machine trains the model (about a second) and saves it
in a cache directory; later calls, in any process, load the saved file. The cache is
keyed by the installed library versions and the training recipe, so upgrading
scikit-learn or changing the data retrains instead of loading a stale file.

Loading checks the file twice, as defence in depth. First its bytes: the SHA-256 of the
`.skops` file is recorded in its metadata when the model is built, and a file whose hash
differs (corrupted, or replaced after the build) is refused before skops reads it. Then
its types: skops refuses any type it does not trust by default, and the loader trusts
only the few extra types in `TRUSTED_TYPES`, never whatever a file asks for. Neither
check makes an untrusted file safe: skops narrows what a file can do, it is not a sandbox.

Each `load_model` call is counted, so a test can check that a service loads its model
once at start-up rather than once per request, and each returns a pipeline object of its
own. A process that loads the same file again (a grader importing a fresh app for every
test) gets a copy of the pipeline it already parsed, which costs a hundredth of a parse.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coursekit.training import TRAINERS, ModelMetadata, library_versions, save_model

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

CACHE_ENV_VAR = "COURSEKIT_MODEL_CACHE"

# Types the course's own pipelines may contain that some skops releases do not trust by
# default. Anything else a file holds that skops does not trust makes the load fail.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "numpy.float64",  # TfidfVectorizer's `dtype` parameter
    }
)


# Bumped when what a build writes changes (2: the metadata records the file's SHA-256), so
# a cache written by an older coursekit is rebuilt rather than refused.
ARTIFACT_FORMAT = 2


class UntrustedArtifactError(ValueError):
    """A model file holds types outside skops's defaults and `TRUSTED_TYPES`."""


class ArtifactIntegrityError(ValueError):
    """A model file's SHA-256 is not the one recorded when it was built, or none is recorded."""


@dataclass(frozen=True)
class LoadedModel:
    """A fitted pipeline, its metadata, and the file it was loaded from."""

    name: str
    pipeline: Pipeline
    metadata: ModelMetadata
    path: Path

    @property
    def version(self) -> str:
        """The model's version, such as `"1.0.0"`."""
        return self.metadata["version"]

    @property
    def classes(self) -> list[str]:
        """The labels a classifier predicts, in `predict_proba` column order; empty otherwise."""
        return list(self.metadata.get("classes", []))


_load_counts: Counter[str] = Counter()
_load_counts_lock = threading.Lock()
# Builds are rare and take about a second. One lock keeps two threads of a process from
# training the same model twice, a lock file two processes (see `_cached_artifact`).
_build_lock = threading.Lock()
# Pipelines already parsed in this process, by the SHA-256 of the file they came from:
# the same bytes always give the same pipeline, and a changed file is parsed anew.
_parsed: dict[str, Pipeline] = {}
_parsed_lock = threading.Lock()


# While `record_batches()` is active: per model name, the rows of each call that a
# pipeline loaded during it received (predict, predict_proba, transform, ...).
_recorded: dict[str, list[int]] | None = None
_recorded_lock = threading.Lock()
RECORDED_METHODS = (
    "predict",
    "predict_proba",
    "predict_log_proba",
    "transform",
    "decision_function",
)


@contextmanager
def record_batches() -> Iterator[dict[str, list[int]]]:
    """Record how many rows each model call receives, for pipelines loaded meanwhile.

        with record_batches() as batches:
            ...  # start the app (it calls load_model), send requests
        batches["tickets"]  # e.g. [1, 8]: one call with one row, one with eight

    A test can so tell one call per batch from one call per row, or see the batch
    sizes a micro-batcher formed, through the model itself rather than a stopwatch.
    """
    global _recorded
    with _recorded_lock:
        if _recorded is not None:
            raise RuntimeError("record_batches() is already active")
        _recorded = defaultdict(list)
        batches = _recorded
    try:
        yield batches
    finally:
        with _recorded_lock:
            _recorded = None


def _recording(name: str, pipeline: Pipeline) -> Pipeline:
    """`pipeline`, whose calls append their row counts to the active recording."""
    batches = _recorded
    if batches is None:
        return pipeline
    for method in RECORDED_METHODS:
        if not hasattr(pipeline, method):
            continue
        original = getattr(pipeline, method)

        def recorded(inputs: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _recorded_lock:
                batches[name].append(len(inputs))
            return _original(inputs, *args, **kwargs)

        # On the instance only: the class, and every pipeline loaded without a
        # recording, stay untouched.
        setattr(pipeline, method, recorded)
    return pipeline


def available_models() -> list[str]:
    """The names `load_model` accepts."""
    return sorted(TRAINERS)


def load_count(name: str) -> int:
    """How many times `load_model(name)` has loaded a model in this process."""
    with _load_counts_lock:
        return _load_counts[name]


def reset_load_counts() -> None:
    """Set every load count back to zero (for tests)."""
    with _load_counts_lock:
        _load_counts.clear()


def _recipe_fingerprint() -> str:
    # The data and the training code decide what a model is; hash them with the
    # library versions so any change to one of them lands in a fresh cache directory.
    digest = hashlib.sha256()
    digest.update(f"artifact-format-{ARTIFACT_FORMAT}".encode())
    digest.update(json.dumps(library_versions(), sort_keys=True).encode())
    package = files("coursekit")
    for recipe_file in (("data", "tickets.csv"), ("datasets.py",), ("training.py",)):
        digest.update(package.joinpath(*recipe_file).read_bytes())
    return digest.hexdigest()[:12]


def cache_directory() -> Path:
    """Where built models are saved: `$COURSEKIT_MODEL_CACHE`, else `coursekit/.model_cache`.

    The directory holds one subdirectory per scikit-learn version and recipe fingerprint.
    """
    root = os.environ.get(CACHE_ENV_VAR) or Path(__file__).resolve().parent / ".model_cache"
    sklearn_version = library_versions()["scikit-learn"]
    return Path(root) / f"sklearn-{sklearn_version}-{_recipe_fingerprint()}"


def save_artifact(pipeline: Pipeline, metadata: ModelMetadata, directory: str | Path) -> Path:
    """Save `pipeline` as `<name>.skops`, with `metadata` and the file's SHA-256 in `<name>.json`.

    The files are written in a staging folder first, then moved in, metadata first, so
    whoever sees the `.skops` file also sees the hash it must match. Returns its path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = metadata["name"]
    with tempfile.TemporaryDirectory(dir=directory, prefix=f".{name}-") as staging:
        staged = save_model(pipeline, metadata, staging)
        recorded = {**metadata, "sha256": hashlib.sha256(staged.read_bytes()).hexdigest()}
        staged.with_suffix(".json").write_text(
            json.dumps(recorded, indent=2) + "\n", encoding="utf-8"
        )
        # os.replace is atomic within one file system, and the staging folder is inside
        # `directory`: a reader sees the old file or the new one, never half of one.
        os.replace(staged.with_suffix(".json"), directory / f"{name}.json")
        os.replace(staged, directory / f"{name}.skops")
    return directory / f"{name}.skops"


def build_model(name: str, directory: str | Path | None = None, seed: int = 0) -> Path:
    """Train model `name` and save it into `directory` (default: the cache); return its path."""
    pipeline, metadata = TRAINERS[name](seed)
    return save_artifact(pipeline, metadata, directory or cache_directory())


def build_missing() -> Path:
    """Build every model the cache lacks; the cache's directory."""
    for name in available_models():
        _cached_artifact(name)
    return cache_directory()


def _cached_artifact(name: str) -> Path:
    path = cache_directory() / f"{name}.skops"
    if path.exists():
        return path
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic writes keep a file whole, not single: two processes that both found the
    # cache empty would each train and save a model (with different `trained_at`), and
    # a process could load one copy as its reference and the other into its app. The
    # lock file lets exactly one process build; the others wait, then load its file.
    with _build_lock, FileLock(path.with_suffix(".lock")):
        if path.exists():  # another thread or process built it while this one waited
            return path
        return build_model(name, path.parent)


def load_artifact(path: str | Path, sha256: str | None = None) -> Pipeline:
    """Load a `.skops` file, refusing it if its bytes or its types are not the expected ones.

    With `sha256`, a file whose SHA-256 differs raises `ArtifactIntegrityError` before
    skops reads a byte of it. A type that is not trusted raises `UntrustedArtifactError`
    naming it. A file whose bytes this process has already parsed is not parsed again: the
    call returns a deep copy of that pipeline, so no two callers share (or can change) one
    object.
    """
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ArtifactIntegrityError(
            f"Refusing to load {path}: its SHA-256 is {digest}, but its metadata recorded "
            f"{sha256} when it was built. The file has changed since (corrupted, or "
            "replaced): rebuild it with `python -m coursekit.train`, never load it as it is."
        )
    with _parsed_lock:
        parsed = _parsed.get(digest)
    if parsed is None:
        parsed = _parse_artifact(path, data)
        with _parsed_lock:
            _parsed[digest] = parsed
    return copy.deepcopy(parsed)


def _parse_artifact(path: str | Path, data: bytes) -> Pipeline:
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    # skops itself refuses any type outside `trusted` while it loads, so the file is
    # read once; asking get_untrusted_types first would parse it twice.
    try:
        return skops.io.loads(data, trusted=sorted(TRUSTED_TYPES))
    except UntrustedTypesFoundException:
        refused = sorted(set(skops.io.get_untrusted_types(data=data)) - TRUSTED_TYPES)
        raise UntrustedArtifactError(
            f"Refusing to load {path}: it contains types that are not trusted: "
            f"{', '.join(refused)}. Only scikit-learn and NumPy types skops trusts, plus "
            f"{sorted(TRUSTED_TYPES)}, may appear in a course model."
        ) from None


def load_model(name: str, directory: str | Path | None = None) -> LoadedModel:
    """Load model `name` ("tickets", "wine" or "embedder") with its metadata.

    Without `directory`, the model comes from the cache and is built there on first
    use. With `directory`, `<directory>/<name>.skops` and `<name>.json` are loaded as
    they are (`FileNotFoundError` if missing). Either way the `.skops` file must match
    the SHA-256 its metadata records (`ArtifactIntegrityError` otherwise, and when none
    is recorded: save with `save_artifact`). Every call counts as one load.
    """
    if directory is None:
        if name not in TRAINERS:
            raise ValueError(f"No model named {name!r}; available: {available_models()}")
        path = _cached_artifact(name)
    else:
        path = Path(directory) / f"{name}.skops"
    metadata: ModelMetadata = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    recorded = metadata.get("sha256")
    if not isinstance(recorded, str):
        raise ArtifactIntegrityError(
            f"Refusing to load {path}: {path.with_suffix('.json').name} records no SHA-256 "
            "of it, so nothing shows the file is the one that was built. Save models with "
            "coursekit.models.save_artifact (or rebuild: `python -m coursekit.train`)."
        )
    pipeline = _recording(name, load_artifact(path, sha256=recorded))
    with _load_counts_lock:
        _load_counts[name] += 1
    return LoadedModel(name=name, pipeline=pipeline, metadata=metadata, path=path)
