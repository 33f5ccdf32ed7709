"""Step 10, solved: the course's models behind an OpenAI-compatible API.

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


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body FastAPI refuses is a 400 in OpenAI's shape, naming the first bad field."""
    first = exc.errors()[0]
    location = [str(part) for part in first["loc"]]
    if location[:1] == ["body"]:
        location = location[1:]
    return error_response(
        400,
        ErrorDetail(
            message=first["msg"],
            type="invalid_request_error",
            param=".".join(location) or None,
        ),
    )


def require_api_key(credentials: BearerDep, settings: SettingsDep) -> None:
    """The request's `Authorization: Bearer <key>` must be the server's key; 401 otherwise."""
    expected = settings.api_key.get_secret_value().encode() if settings.api_key else None
    given = credentials.credentials.encode() if credentials else b""
    # compare_digest: the time taken says nothing about how much of the key was right.
    if expected is None or not secrets.compare_digest(given, expected):
        raise APIError(
            401,
            "Missing or invalid API key: send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


KeyDep = Annotated[None, Depends(require_api_key)]


def _not_found(name: str) -> APIError:
    return APIError(
        404, f"The model '{name}' does not exist.", param="model", code="model_not_found"
    )


def chat_model(registry: Registry, name: str) -> CompletionModel:
    """The chat model a request names; a 404 in OpenAI's shape if there is none."""
    model = registry.chat.get(name)
    if model is None:
        raise _not_found(name)
    return model


async def completion_chunks(
    chat: ChatCompletionRequest,
    model: CompletionModel,
    completion_id: str,
    created: int,
    options: dict[str, Any],
) -> AsyncIterator[str]:
    """The answer as `data:` events: role first, pieces, one finish, usage, [DONE]."""

    def event(choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> str:
        chunk = ChatCompletionChunk(
            id=completion_id, created=created, model=chat.model, choices=choices, usage=usage
        )
        # Without its null fields: the client's stream accumulator merges each delta into
        # what it has, and a null `type` or `id` would overwrite the call's real one.
        return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"

    yield event([ChunkChoice(index=0, delta=Delta(role="assistant", content=""))])
    # Iterated here, inside the generator the response streams: when the client goes
    # away, the response is cancelled, and so is the model's stream.
    async for delta in model.stream_complete(chat.messages, **options):
        if delta.content:
            yield event([ChunkChoice(index=0, delta=Delta(content=delta.content))])
        for index, call in enumerate(delta.tool_calls or []):
            # As OpenAI streams a call: its id and name first, then its arguments.
            opening = ToolCallDelta(
                index=index,
                id=call["id"],
                type="function",
                function=FunctionDelta(name=call["function"]["name"], arguments=""),
            )
            arguments = ToolCallDelta(
                index=index, function=FunctionDelta(arguments=call["function"]["arguments"])
            )
            for piece in (opening, arguments):
                yield event([ChunkChoice(index=0, delta=Delta(tool_calls=[piece]))])
        if delta.finish_reason is not None:
            finish = ChunkChoice(index=0, delta=Delta(), finish_reason=delta.finish_reason)
            yield event([finish])
            if chat.stream_options and chat.stream_options.include_usage and delta.usage:
                yield event([], CompletionUsage(**delta.usage.as_dict()))
    yield "data: [DONE]\n\n"


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
    model = chat_model(registry, chat.model)  # before the stream starts: a 404 is still possible
    options = {
        "tools": [tool.model_dump() for tool in chat.tools or []] or None,
        # max_completion_tokens is the current name; max_tokens the one older clients send.
        "max_tokens": chat.max_completion_tokens or chat.max_tokens or DEFAULT_MAX_TOKENS,
        "seed": chat.seed,
        "temperature": chat.temperature,
        "stop": chat.stop,
    }
    if chat.tool_choice == "none":
        options["tools"] = None
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if chat.stream:
        return StreamingResponse(
            completion_chunks(chat, model, completion_id, created, options),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    completion = await model.complete(chat.messages, **options)
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=chat.model,
        choices=[
            Choice(
                index=0,
                message=ChatCompletionMessage.model_validate(completion.message),
                finish_reason=completion.finish_reason,
            )
        ],
        usage=CompletionUsage(**completion.usage.as_dict()),
    )


@app.get("/v1/models", responses=AUTH_ERRORS)
def list_models(registry: RegistryDep, _: KeyDep) -> ModelList:
    names = [*registry.chat, *registry.embedders]
    return ModelList(
        data=[
            ModelCard(id=name, created=registry.created, owned_by=registry.owned_by)
            for name in names
        ]
    )


def _as_base64(vector: list[float]) -> str:
    """The vector as OpenAI's `base64` format: little-endian float32 values, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


@app.post("/v1/embeddings", responses={**AUTH_ERRORS, **BODY_ERRORS})
def embeddings(batch: EmbeddingRequest, registry: RegistryDep, _: KeyDep) -> EmbeddingList:
    embedder = registry.embedders.get(batch.model)
    if embedder is None:
        raise _not_found(batch.model)
    texts = [batch.input] if isinstance(batch.input, str) else batch.input
    vectors = embedder(texts)
    tokens = sum(count_tokens(text) for text in texts)
    return EmbeddingList(
        data=[
            Embedding(
                index=index,
                embedding=_as_base64(vector) if batch.encoding_format == "base64" else vector,
            )
            for index, vector in enumerate(vectors)
        ],
        model=batch.model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
