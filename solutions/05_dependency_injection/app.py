"""Step 05, solved: the ticket and wine service, wired together with dependency injection.

This file only assembles the parts (FastAPI's "bigger applications" layout): it loads
the models once, sets the body limit, adds step 04's error handlers and includes both
routers. Every route asks for what it needs (settings, a model, an API key check, a
database connection) through the dependencies of deps.py.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import base_routes
import routes
from error_handling import add_error_handlers
from fastapi import FastAPI
from model_registry import load_registry

from coursekit.docs import add_offline_docs
from coursekit.models import load_model

MAX_BODY_SIZE = 1_048_576  # bytes (1 MiB): a full batch of 100 long tickets fits easily


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The registry: every served model by name, loaded once before the first request.
    app.state.registry = load_registry()
    app.state.embedder = load_model("embedder")
    yield
    app.state.registry = {}


app = FastAPI(
    title="Ticket and wine predictions",
    version="0.5.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
    # Starlette stops reading a body past this size: a client cannot make us buffer 2 GB.
    max_body_size=MAX_BODY_SIZE,
)
add_offline_docs(app)
add_error_handlers(app)
app.include_router(base_routes.router)
app.include_router(routes.router)
