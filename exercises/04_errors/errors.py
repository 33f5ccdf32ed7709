"""Step 04, yours: one error body for every failure, and the handlers that answer it.

Read README.md in this folder first: it states the error body and every status.
app.py registers these handlers; error_schemas.py (given) holds the models they build.
"""

from collections.abc import Sequence
from typing import Any

from error_schemas import ERROR_CODES, ErrorBody, ErrorDetail, ErrorResponse, ModelNotLoadedError
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# What /openapi.json (and so /docs) says the prediction routes may answer besides 200.
# TODO: document the error statuses a prediction route can answer (400, 413, 422 and
# 503), each with the error body as its model and a short description (the 413 also as
# the plain text Starlette sends for a declared body). The given routes pass
# this dict as their `responses`. Lesson: "Documenting errors in OpenAPI".
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {}


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Sequence[ErrorDetail] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A response with this service's one error body."""
    # TODO: answer `status_code` with the error body built from the other arguments (the
    # models of error_schemas.py), and these headers. Lesson: "One error body for every
    # failure".
    raise NotImplementedError


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    # TODO: a 422 in the error body, one detail per validation error (where, what, which
    # kind), never the refused input. Lesson: "Reshaping validation errors" and "NaN and
    # infinity".
    raise NotImplementedError


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # TODO: the exception's status, in the error body, with the code ERROR_CODES gives for
    # it ("http_error" for a status it does not list), no details, and the exception's
    # headers. Lesson: "HTTPException and Starlette's errors".
    raise NotImplementedError


async def model_not_loaded_handler(request: Request, exc: ModelNotLoadedError) -> JSONResponse:
    # TODO: a 503 in the error body, code "model_not_loaded", with a message that names
    # the model. Lesson: "503 while no model is loaded".
    raise NotImplementedError
