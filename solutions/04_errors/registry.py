"""Step 04, solved: the models the service holds, loaded once, and found for a route."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from error_schemas import ModelNotLoadedError
from fastapi import FastAPI, Request
from serving import MODEL_NAMES, ModelName

from coursekit.models import LoadedModel, load_model

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # A model that fails to load must not take the whole service down: the other model
    # still serves, /health says which one is missing, and its routes answer 503.
    app.state.models = {}
    for name in MODEL_NAMES:
        try:
            app.state.models[name] = load_model(name)
        except Exception:
            logger.exception("The %s model failed to load; its routes will answer 503", name)
    yield
    app.state.models = {}


def get_model(request: Request, name: ModelName) -> LoadedModel:
    """The model `name`, as the lifespan loaded it; ModelNotLoadedError if it is not loaded."""
    # Before start-up app.state has no `models` at all; after a failed load, no entry.
    models = getattr(request.app.state, "models", {})
    if name not in models:
        raise ModelNotLoadedError(name)
    return models[name]
