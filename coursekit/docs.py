"""Interactive API docs (`/docs` and `/redoc`) that work without internet access.

FastAPI's built-in docs pages load Swagger UI and ReDoc from a CDN, so on a machine
offline they stay blank. `add_offline_docs` follows FastAPI's recipe for self-hosting
those assets: the app serves the JavaScript and CSS itself, from the copies that the
`fastapi-offline` package installs. Every app in the course is created the same way:

    app = FastAPI(title="...", docs_url=None, redoc_url=None, lifespan=lifespan)
    add_offline_docs(app)
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

# Only the asset files of fastapi-offline are used, not its `FastAPIOffline` factory:
# the app learners read stays a plain `FastAPI(...)`.
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
REDOC_IMAGES_POLICY = "img-src 'self' data: blob:"


def add_offline_docs(
    app: FastAPI,
    *,
    docs_url: str | None = "/docs",
    redoc_url: str | None = "/redoc",
    assets_url: str = "/docs-assets",
) -> None:
    """Serve Swagger UI at `docs_url` and ReDoc at `redoc_url`, with no CDN involved.

    The app must be created with `docs_url=None, redoc_url=None`: otherwise FastAPI has
    already registered its CDN-backed pages on those paths, and they would win. The
    pages are left out of the OpenAPI schema, like FastAPI's own.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError(
            "This app already serves FastAPI's CDN-based docs "
            f"(docs_url={app.docs_url!r}, redoc_url={app.redoc_url!r}). Create it with "
            "FastAPI(..., docs_url=None, redoc_url=None) before calling add_offline_docs(app)."
        )
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("This app has no OpenAPI schema (openapi_url=None): nothing to document.")

    app.mount(assets_url, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url

    if docs_url is not None:

        @app.get(docs_url, include_in_schema=False)
        async def swagger_ui_html(request: Request) -> HTMLResponse:
            # Behind a proxy that strips a path prefix, every URL the page loads needs it.
            root = request.scope.get("root_path", "").rstrip("/")
            return get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{assets_url}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{assets_url}/swagger-ui.css",
                swagger_favicon_url=f"{root}{assets_url}/favicon.png",
                oauth2_redirect_url=root + oauth2_redirect_url if oauth2_redirect_url else None,
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters=app.swagger_ui_parameters,
            )

        if oauth2_redirect_url:

            @app.get(oauth2_redirect_url, include_in_schema=False)
            async def swagger_ui_redirect() -> HTMLResponse:
                return get_swagger_ui_oauth2_redirect_html()

    if redoc_url is not None:

        @app.get(redoc_url, include_in_schema=False)
        async def redoc_html(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "").rstrip("/")
            page = get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{assets_url}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{assets_url}/favicon.png",
                with_google_fonts=False,
            )
            # ReDoc's bundle always shows a "by Redocly" logo fetched from its CDN (and
            # hides it when that fails). Images from the app itself only: the browser
            # never sends that request.
            page.headers["Content-Security-Policy"] = REDOC_IMAGES_POLICY
            return page


class HTTPError(BaseModel):
    """The body FastAPI gives an `HTTPException`: `{"detail": "..."}`."""

    detail: str


# Two answers FastAPI and Starlette give by themselves, before any route runs, that
# /openapi.json never shows unless a route declares them (`responses=` on the route):
# a 400 when the JSON's text is not valid UTF-8 ("There was an error parsing the body",
# fastapi/routing.py), and a 413 when the body is over the app's `max_body_size`: the
# plain text "Content Too Large" when the request declared its size (Starlette answers
# before reading), `{"detail": "Content Too Large"}` when it streamed the body (FastAPI
# raises an HTTPException while reading).
def http_error(description: str) -> dict[str, Any]:
    """A `responses=` entry for an `HTTPException` answer: `{"detail": "..."}`, as JSON.

    The media type is spelled out rather than given as `"model": HTTPError`, because
    FastAPI files a model under the route's own media type: text/event-stream on a
    streaming route, where the error is JSON all the same.
    """
    return {
        "description": description,
        # A copy each time, so no route can change another's.
        "content": {"application/json": {"schema": copy.deepcopy(_http_error_schema())}},
    }


@functools.cache
def _http_error_schema() -> dict[str, Any]:
    # Generated once: a route module calls http_error for each of its error answers at
    # every import, and the grader imports a step's modules afresh for each test.
    return HTTPError.model_json_schema()


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` written in place, for a `responses=` entry.

    Pydantic puts nested models under `$defs` with `#/$defs/...` references. Inside an
    OpenAPI document those references are read from the document's root, where there is
    no `$defs`: ReDoc then fails to render the route ("Invalid reference token: $defs").
    A model that contains itself cannot be written in place and raises ValueError.
    """
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            name = reference.removeprefix("#/$defs/")
            if name in seen:
                raise ValueError(f"{model.__name__} contains {name} within itself")
            target = resolve(definitions[name], (*seen, name))
            rest = {key: resolve(value, seen) for key, value in node.items() if key != "$ref"}
            return {**target, **rest}
        return {key: resolve(value, seen) for key, value in node.items()}

    return resolve(schema, ())


UNREADABLE_BODY: dict[int | str, dict[str, Any]] = {
    400: http_error("The body could not be decoded"),
}
BODY_TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {
        "description": "The request body is over the size limit",
        "content": {
            "application/json": {"schema": HTTPError.model_json_schema()},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {**UNREADABLE_BODY, **BODY_TOO_LARGE}
