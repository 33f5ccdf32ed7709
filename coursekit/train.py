"""Rebuild the course's models and print their held-out metrics.

    python -m coursekit.train                 # into the cache that load_model reads
    python -m coursekit.train --output DIR    # somewhere else, to look at the files

Nobody has to run this: `coursekit.models.load_model` builds a missing model by itself.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from coursekit.models import available_models, build_model, cache_directory


def main(argv: list[str] | None = None) -> None:
    """Train every model, save it, and print what was saved with its metrics."""
    parser = argparse.ArgumentParser(prog="python -m coursekit.train", description=__doc__)
    parser.add_argument("--output", type=Path, help="directory to write (default: the cache)")
    args = parser.parse_args(argv)
    directory = args.output or cache_directory()
    print(f"Saving models in {directory}")
    for name in available_models():
        started = time.perf_counter()
        path = build_model(name, directory)
        seconds = time.perf_counter() - started
        metadata = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        size_kb = path.stat().st_size / 1024
        print(f"\n{name} {metadata['version']}: {path.name}, {size_kb:.1f} KiB, {seconds:.2f} s")
        if "metrics" in metadata:
            metrics = metadata["metrics"]
            print(
                f"  held-out accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}"
                f" ({metrics['n_train']} train, {metrics['n_test']} test)"
            )
            print(f"  classes: {', '.join(metadata['classes'])}")
        else:
            print(f"  {metadata['dimension']} dimensions, fitted on {metadata['n_train']} texts")


if __name__ == "__main__":
    main()
