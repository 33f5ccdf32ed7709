"""Step 05, solved: the settings, and every dependency a route asks for with `Depends`.

Each dependency is written once, here, and a test can replace any of them with
`app.dependency_overrides`.
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

    model_config = SettingsConfigDict(env_prefix="PREDICTOR_")

    # Several keys, so a key can be rotated: add the new one, move clients, drop the old.
    # SecretStr keeps them out of logs and tracebacks (it prints as '**********').
    api_keys: list[SecretStr] = []
    database_path: Path = Path("predictions.sqlite3")


@lru_cache
def get_settings() -> Settings:
    # Cached: the environment is read once, on the first request, not at import, and
    # tests replace this very function with app.dependency_overrides.
    return Settings()


SettingsDep = Annotated[Settings, Depends(get_settings)]

# --- The model registry -------------------------------------------------------------------


def get_registry(request: Request) -> dict[str, LoadedModel]:
    """Every served model by name, as the lifespan loaded them."""
    return request.app.state.registry


RegistryDep = Annotated[dict[str, LoadedModel], Depends(get_registry)]


def get_model(name: str, registry: RegistryDep) -> LoadedModel:
    """The model the path names: `name` is read from the path of the route that uses this."""
    model = registry.get(name)
    if model is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"No model {name!r}")
    return model


ModelDep = Annotated[LoadedModel, Depends(get_model)]


def get_embedder(request: Request) -> LoadedModel:
    """The text embedder, as the lifespan loaded it."""
    return request.app.state.embedder


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
    given = credentials.credentials.encode() if credentials else b""
    # compare_digest takes as long whatever the keys hold, so the answer's timing tells an
    # attacker nothing about how much of a guess was right. Bytes, because it refuses str
    # holding non-ASCII characters (with a TypeError: a 500).
    valid = any(
        secrets.compare_digest(given, key.get_secret_value().encode()) for key in settings.api_keys
    )
    if credentials is None or not valid:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Missing or invalid API key",
            headers={"WWW-Authenticate": "Bearer"},
        )


# --- The prediction log: one SQLite connection per request ------------------------------


def get_connection(settings: SettingsDep) -> Iterator[sqlite3.Connection]:
    """A connection to the log for one request: committed if the route succeeds, always closed."""
    # check_same_thread=False: FastAPI opens it in one threadpool thread and runs a `def`
    # route in another. Safe here, as one request uses it at a time.
    connection = sqlite3.connect(settings.database_path, check_same_thread=False)
    try:
        connection.execute(SCHEMA)
        yield connection
        # Reached only if the route did not raise: a failed request logs nothing.
        connection.commit()
    finally:
        connection.close()


# scope="function": the code after `yield` runs when the route returns, before the response
# is sent, so a client that has its answer can already read its prediction in the log.
ConnectionDep = Annotated[sqlite3.Connection, Depends(get_connection, scope="function")]
