"""Model loaders that fail, for the tests of a service that must start without a model.

Step 04's tests make its lifespan's `load_model` one of these (the grader's `app_server`
with `patches=`): one model fails to load, as a missing or broken file would, and the
others load as usual.
"""

from coursekit.models import LoadedModel, load_model


class ModelFileCorrupt(Exception):
    """Not an OSError nor a ValueError: any exception a load raises must be survived."""


def wine_file_missing(name: str) -> LoadedModel:
    """`load_model`, but the wine model's file is missing."""
    if name == "wine":
        raise OSError("wine.skops: no such file")
    return load_model(name)


def tickets_file_corrupt(name: str) -> LoadedModel:
    """`load_model`, but the tickets model's file is not a model."""
    if name == "tickets":
        raise ModelFileCorrupt("tickets.skops: not a skops file")
    return load_model(name)
