"""The course's one error body, as step 04 builds it, for the given code of later steps.

Step 04 teaches it: every 4xx and 5xx answered as `{"error": {"code", "message",
"details"}}`, a stable `code` for programs and a `message` for people, the validation
details without the refused input. The services that later steps give (05, 11, 13) answer
their errors with it, from here, and add the handlers of their own errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorDetail(BaseModel):
    """One problem with the request: where it is, what is wrong, and its kind."""

    loc: list[str | int]
    message: str
    type: str


class ErrorBody(BaseModel):
    """What went wrong: a stable `code` for programs, a `message` for people."""

    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx this service answers has this body."""

    error: ErrorBody


# The `code` of an HTTP error, by status. A client branches on the code, never on the message.
ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "content_too_large",
}


# What /openapi.json (and so /docs) says a route that reads a JSON body may answer
# besides its success; a service adds the statuses of its own errors.
BODY_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body could not be decoded"},
    # A streamed body over the limit gets the error body; a declared one, Starlette's
    # own plain text (its middleware replaces whatever the handler answered).
    413: {
        "model": ErrorResponse,
        "description": "The request body is over the size limit",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    422: {"model": ErrorResponse, "description": "The request is not valid"},
}


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Sequence[ErrorDetail] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A response with the one error body."""
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=list(details)))
    return JSONResponse(status_code=status_code, content=body.model_dump(), headers=headers)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A 422 listing where, what and which kind: echoing the refused `input` would send
    the client's data back (and a NaN in it cannot even be written as JSON)."""
    assert isinstance(exc, RequestValidationError)
    details = [
        ErrorDetail(loc=list(error["loc"]), message=error["msg"], type=error["type"])
        for error in exc.errors()
    ]
    count = len(details)
    message = f"The request is not valid: {count} problem{'s' if count != 1 else ''}."
    return error_response(422, "validation_error", message, details)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's HTTPException (unknown paths, wrong methods, a body over the size
    limit, and every one a route raises) in the error body, its headers kept."""
    assert isinstance(exc, StarletteHTTPException)
    code = ERROR_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)
