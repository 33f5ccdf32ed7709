"""Step 10: the course's models behind an OpenAI-compatible API.

Any OpenAI client (the official `openai` package, LangChain, a chat UI) can use this
server by pointing its `base_url` at `http://host:port/v1`.
"""

import base64
import secrets
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from openai_schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    DEFAULT_MAX_TOKENS,
    MAX_BODY_SIZE,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    CompletionUsage,
    Delta,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    ErrorDetail,
    FunctionDelta,
    ModelCard,
    ModelList,
    ToolCallDelta,
)
from service import (
    APIError,
    BearerDep,
    CompletionModel,
    Registry,
    RegistryDep,
    SettingsDep,
    api_error_handler,
    error_response,
    http_error_handler,
    lifespan,
)
from starlette.exceptions import HTTPException

from coursekit.docs import add_offline_docs, inline_schema
from coursekit.llm import count_tokens

# Imported for you: what the TODOs below need (ruff would flag them as unused).
__all__ = [
    "DEFAULT_MAX_TOKENS", "ChatCompletionChunk", "ChatCompletionMessage", "Choice",
    "ChunkChoice", "CompletionUsage", "Delta", "Embedding", "EmbeddingUsage", "ErrorDetail",
    "FunctionDelta", "ModelCard", "ToolCallDelta", "base64", "count_tokens", "error_response",
    "secrets", "struct", "time", "uuid",
]  # fmt: skip

app = FastAPI(
    title="OpenAI-compatible API",
    version="1.0.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
    max_body_size=MAX_BODY_SIZE,  # step 04: a client cannot make us buffer a huge body
)
add_offline_docs(app)
app.add_exception_handler(APIError, api_error_handler)
app.add_exception_handler(HTTPException, http_error_handler)


# TODO: register this function as the handler of RequestValidationError
# (`@app.exception_handler(...)`). It answers 400, not 422, with OpenAI's error body
# (`error_response` and `ErrorDetail`): the first error's message, type
# "invalid_request_error", and as `param` the field at fault (the error's location
# without "body", joined with "."). Lesson: "OpenAI's error object".
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    raise NotImplementedError


def require_api_key(credentials: BearerDep, settings: SettingsDep) -> None:
    # TODO: the request's bearer token must be `settings.api_key`, compared in constant
    # time (step 05). A missing or wrong key (or no key configured) raises
    # `APIError(401, ...)` with code "invalid_api_key". Lesson: "OpenAI's error object".
    raise NotImplementedError


KeyDep = Annotated[None, Depends(require_api_key)]


def chat_model(registry: Registry, name: str) -> CompletionModel:
    # TODO: the chat model of the registry with this id; an unknown id raises
    # `APIError(404, ...)` with param "model" and code "model_not_found".
    # Lesson: "Models and the registry".
    raise NotImplementedError


async def completion_chunks(
    chat: ChatCompletionRequest,
    model: CompletionModel,
    completion_id: str,
    created: int,
    options: dict[str, Any],
) -> AsyncIterator[str]:
    # TODO: stream the answer of `model.stream_complete(chat.messages, **options)` as
    # `data: <ChatCompletionChunk JSON without its nulls>` events, all with `completion_id`:
    # a first delta with role "assistant"; one chunk per content delta, as it comes; a
    # tool call as an opening piece (index, id, type, name) then its arguments; one chunk
    # with the finish_reason; with `include_usage`, a chunk with `choices: []` and the
    # usage; last `data: [DONE]`. Lessons: "Streaming chunks", "Usage in a stream",
    # "Tool calls", "When the client goes away".
    raise NotImplementedError
    yield ""  # makes this function an async generator, as it must be


@app.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={
        **AUTH_ERRORS,
        **BODY_ERRORS,
        200: {
            "description": "The answer; with `stream`, its chunks as Server-Sent Events",
            "content": {"text/event-stream": {"schema": inline_schema(ChatCompletionChunk)}},
        },
    },
)
async def chat_completions(
    chat: ChatCompletionRequest, registry: RegistryDep, _: KeyDep
) -> ChatCompletion | StreamingResponse:
    # TODO: find the model (chat_model), pass it the request's options (tools unless
    # tool_choice is "none", max_completion_tokens or else max_tokens or else
    # DEFAULT_MAX_TOKENS, seed, temperature, stop). With `stream`, return a
    # StreamingResponse of completion_chunks (text/event-stream); otherwise the
    # ChatCompletion of `await model.complete(...)`. Lessons: "The request",
    # "The chat completion object".
    raise NotImplementedError


@app.get("/v1/models", responses=AUTH_ERRORS)
def list_models(registry: RegistryDep, _: KeyDep) -> ModelList:
    # TODO: one ModelCard per chat model and per embedder of the registry, with the
    # registry's `created` and `owned_by`. Lesson: "Models and the registry".
    raise NotImplementedError


@app.post("/v1/embeddings", responses={**AUTH_ERRORS, **BODY_ERRORS})
def embeddings(batch: EmbeddingRequest, registry: RegistryDep, _: KeyDep) -> EmbeddingList:
    # TODO: the embedder of `batch.model` (404 as for chat), one Embedding per text in
    # order (a single string is one text), as floats or, for encoding_format "base64",
    # the base64 of little-endian float32 values; usage counts the texts' tokens
    # (count_tokens). Lesson: "Embeddings".
    raise NotImplementedError
