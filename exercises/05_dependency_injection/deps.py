"""Step 05, yours: the settings, and every dependency a route asks for with `Depends`.

Read README.md in this folder first: it states what each dependency must do. The
`Annotated` aliases (SettingsDep, RegistryDep, ...) are given: your routes and the given
ones (base_routes.py) declare their parameters with them.
"""

import secrets
import sqlite3
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prediction_log import SCHEMA
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from coursekit.models import LoadedModel

# --- Settings, read from the environment -------------------------------------------------


class Settings(BaseSettings):
    """The service's configuration, read from PREDICTOR_* environment variables.

    For example: PREDICTOR_API_KEYS='["key-1", "key-2"]' PREDICTOR_DATABASE_PATH=log.sqlite3
    """

    # TODO: read each field from the environment variable PREDICTOR_<FIELD NAME>, such as
    # PREDICTOR_DATABASE_PATH. Lesson: "Settings from the environment".

    # Several keys, so a key can be rotated: add the new one, move clients, drop the old.
    # SecretStr keeps them out of logs and tracebacks (it prints as '**********').
    api_keys: list[SecretStr] = []
    database_path: Path = Path("predictions.sqlite3")


def get_settings() -> Settings:
    # TODO: return the Settings, read from the environment on the first call (never at
    # import) and the very same object on every later call. The tests replace this
    # function with app.dependency_overrides. Lesson: "Settings from the environment".
    raise NotImplementedError


SettingsDep = Annotated[Settings, Depends(get_settings)]

# --- The model registry -------------------------------------------------------------------


def get_registry(request: Request) -> dict[str, LoadedModel]:
    """Every served model by name, as the lifespan loaded them."""
    # TODO: the registry your lifespan (app.py) stored. Lesson: "A model registry as a
    # dependency".
    raise NotImplementedError


RegistryDep = Annotated[dict[str, LoadedModel], Depends(get_registry)]


def get_model(name: str, registry: RegistryDep) -> LoadedModel:
    """The model the path names: `name` is read from the path of the route that uses this."""
    # TODO: the model called `name` in the registry; a name it does not hold is a 404 in
    # the error body (code "not_found"). Lesson: "A model registry as a dependency".
    raise NotImplementedError


ModelDep = Annotated[LoadedModel, Depends(get_model)]


def get_embedder(request: Request) -> LoadedModel:
    """The text embedder, as the lifespan loaded it."""
    # TODO: the embedder your lifespan stored. Lesson: "A model registry as a dependency".
    raise NotImplementedError


EmbedderDep = Annotated[LoadedModel, Depends(get_embedder)]

# --- API keys -------------------------------------------------------------------------------

# auto_error=False: a missing header reaches require_api_key as None, so a missing key and
# a wrong key get the very same 401, written in one place.
bearer = HTTPBearer(auto_error=False)


def require_api_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    settings: SettingsDep,
) -> None:
    """Let the request through only with `Authorization: Bearer <one of the API keys>`."""
    # TODO: return (let the request through) only when the request's bearer key is one of
    # settings.api_keys, compared in constant time; otherwise a 401 with the header
    # `WWW-Authenticate: Bearer`, the same for a missing and for a wrong key, and never a
    # 500 whatever the key holds. Lessons: "API keys with HTTPBearer" and "Comparing keys
    # in constant time".
    raise NotImplementedError


# --- The prediction log: one SQLite connection per request ------------------------------


def get_connection(settings: SettingsDep) -> Iterator[sqlite3.Connection]:
    """A connection to the log for one request: committed if the route succeeds, always closed."""
    # TODO: a dependency with `yield`: open a connection to settings.database_path (one a
    # `def` route can use from another thread), create the table (SCHEMA), hand it to the
    # route, commit only when the route returned, and close it in every case. Lesson:
    # "Dependencies with yield: a connection per request".
    raise NotImplementedError
    yield  # a `yield` makes this a generator: keep one in yours


# scope="function": the code after `yield` runs when the route returns, before the response
# is sent, so a client that has its answer can already read its prediction in the log.
ConnectionDep = Annotated[sqlite3.Connection, Depends(get_connection, scope="function")]
