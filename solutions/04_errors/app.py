"""Step 04, solved: the step-03 service, hardened so every bad input gets a clear 4xx.

This file only assembles the parts (FastAPI's "bigger applications" layout): the routes
of step 03 (serving_routes.py), the models (registry.py) and the error handlers (errors.py).
"""

from error_schemas import ModelNotLoadedError
from errors import http_error_handler, model_not_loaded_handler, validation_error_handler
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from registry import lifespan
from serving_routes import router
from starlette.exceptions import HTTPException as StarletteHTTPException

from coursekit.docs import add_offline_docs

MAX_BODY_SIZE = 1_048_576  # bytes (1 MiB): a full batch of 100 long tickets fits easily

app = FastAPI(
    title="Ticket and wine predictions",
    version="0.4.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
    # Starlette stops reading a body past this size: a client cannot make us buffer 2 GB.
    max_body_size=MAX_BODY_SIZE,
)
add_offline_docs(app)
app.add_exception_handler(RequestValidationError, validation_error_handler)
# Starlette's HTTPException, not FastAPI's subclass: Starlette itself raises it for an
# unknown path (404), a wrong method (405) and a body over the size limit (413).
app.add_exception_handler(StarletteHTTPException, http_error_handler)
app.add_exception_handler(ModelNotLoadedError, model_not_loaded_handler)
app.include_router(router)
