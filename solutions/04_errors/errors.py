"""Step 04, solved: one error body for every failure, and the handlers that answer it."""

from collections.abc import Sequence
from typing import Any

from error_schemas import ERROR_CODES, ErrorBody, ErrorDetail, ErrorResponse, ModelNotLoadedError
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# What /openapi.json (and so /docs) says the prediction routes may answer besides 200.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body could not be decoded"},
    # A streamed body over the limit gets the error body; a declared one, Starlette's
    # own plain text (its middleware replaces whatever the handler answered).
    413: {
        "model": ErrorResponse,
        "description": "The request body is over the size limit",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    422: {"model": ErrorResponse, "description": "The request is not valid"},
    503: {"model": ErrorResponse, "description": "The model is not loaded"},
}


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Sequence[ErrorDetail] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A response with this service's one error body."""
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=list(details)))
    return JSONResponse(status_code=status_code, content=body.model_dump(), headers=headers)


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Only where, what and which kind: echoing the refused `input` would send the client's
    # data back (and a NaN in it cannot even be written as JSON).
    details = [
        ErrorDetail(loc=list(error["loc"]), message=error["msg"], type=error["type"])
        for error in exc.errors()
    ]
    count = len(details)
    message = f"The request is not valid: {count} problem{'s' if count != 1 else ''}."
    return error_response(422, "validation_error", message, details)


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = ERROR_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def model_not_loaded_handler(request: Request, exc: ModelNotLoadedError) -> JSONResponse:
    message = f"The {exc.name} model is not loaded. Try again later."
    # Retry-After: a 503 is temporary, and this tells a well-behaved client when to retry.
    return error_response(503, "model_not_loaded", message, headers={"Retry-After": "30"})
