"""Step 04, yours: the step-03 service, hardened so every bad input gets a clear 4xx.

Read README.md in this folder first: it states the error body and every status.
Grade your work with `pytest exercises/04_errors`.

This file assembles the parts (FastAPI's "bigger applications" layout): the given routes
of step 03 (serving_routes.py), your models (registry.py) and your error handlers (errors.py).
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
    # TODO: refuse request bodies over MAX_BODY_SIZE bytes. Lesson: "Request body size
    # limits".
)
add_offline_docs(app)
# TODO: register each handler of errors.py for the exception it answers, so that the
# 404, 405 and 413 Starlette raises itself get the error body too. Lesson: "HTTPException
# and Starlette's errors" (which class), then "Reshaping validation errors" (the app
# that registers both).
app.include_router(router)
