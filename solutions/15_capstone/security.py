"""Who is calling, how often they may, and which request and process this is.

The rate limit's counters live in the Valkey server, not in a worker's memory: with two
worker processes, a limit counted in each would let a key through twice as often.
"""

import math
import os
import secrets
import time
import uuid
from typing import Annotated

from contract import (
    REQUEST_ID_HEADER,
    SERVED_BY_HEADER,
    ApiKey,
    ServiceError,
    is_valid_request_id,
)
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

bearer = HTTPBearer(auto_error=False)  # a missing key is our 401, not FastAPI's 403


def _unauthorized() -> ServiceError:
    return ServiceError(
        401,
        "invalid_api_key",
        "Missing or invalid API key: send it as 'Authorization: Bearer <key>'.",
        headers={"WWW-Authenticate": "Bearer"},
    )


def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey:
    """The holder of the request's key; 401 without a key or with an unknown one."""
    given = credentials.credentials.encode() if credentials else b""
    found = None
    for key, holder in request.app.state.settings.api_keys.items():
        # compare_digest against every key: the time taken says nothing about a key.
        if secrets.compare_digest(given, key.encode()):
            found = holder
    if found is None:
        raise _unauthorized()
    return found


class RateLimiter:
    """A moving-window limit per user, counted in the shared Valkey server."""

    def __init__(self, redis_url: str) -> None:
        storage = RedisStorage(f"async+{redis_url}", implementation="redispy")
        self.limiter = MovingWindowRateLimiter(storage)

    async def hit(self, user: str, rate: str) -> None:
        item = parse(rate)
        if await self.limiter.hit(item, user):
            return
        stats = await self.limiter.get_window_stats(item, user)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise ServiceError(
            429,
            "rate_limited",
            f"Too many requests for this key ({rate}); try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )


async def rate_limited_caller(
    request: Request, holder: Annotated[ApiKey, Depends(caller)]
) -> ApiKey:
    """The caller, once this request is counted against their limit."""
    await request.app.state.rate_limiter.hit(holder.user, holder.rate_limit)
    return holder


CallerDep = Annotated[ApiKey, Depends(rate_limited_caller)]


class RequestIdMiddleware:
    """Every answer says which request it was and which worker process served it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.served_by = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
        request_id = incoming if is_valid_request_id(incoming) else uuid.uuid4().hex

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
                    (SERVED_BY_HEADER.lower().encode(), self.served_by),
                ]
                message = {**message, "headers": headers}
            await send(message)  # at once: a stream's chunks are not held back

        await self.app(scope, receive, send_with_ids)
