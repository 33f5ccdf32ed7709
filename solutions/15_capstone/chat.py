"""The OpenAI-compatible chat API, with sessions the server keeps and tools it runs.

A session's messages live in the Valkey server, so any worker process can continue a
conversation that another one began.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from contract import (
    CHAT_MODEL,
    DEFAULT_MAX_TOKENS,
    MAX_SESSION_MESSAGES,
    MAX_TOOL_ROUNDS,
    ROUND_LIMIT_REPLY,
    SESSION_HEADER,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    ServiceError,
    Session,
    SessionCreated,
    openai_schemas,
    tool_error,
    tool_result,
    tool_specs,
)
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from redis.asyncio import Redis
from security import CallerDep

from coursekit.llm import Completion, ConversationError, Usage, text_completion

router = APIRouter()


def _no_session() -> ServiceError:
    return ServiceError(404, "session_not_found", "You hold no session with this id.")


async def owned_messages(redis: Redis, session_id: str, user: str) -> list[dict[str, Any]]:
    """The stored messages of the caller's session; 404 if it is not theirs."""
    owner = await redis.get(f"session:{session_id}:owner")
    if owner is None or owner.decode() != user:
        raise _no_session()
    return [json.loads(item) for item in await redis.lrange(f"session:{session_id}", 0, -1)]


@router.post("/v1/sessions", status_code=201)
async def create_session(request: Request, holder: CallerDep) -> SessionCreated:
    session_id = uuid.uuid4().hex
    await request.app.state.redis.set(f"session:{session_id}:owner", holder.user)
    return SessionCreated(id=session_id)


@router.get("/v1/sessions/{session_id}")
async def read_session(session_id: str, request: Request, holder: CallerDep) -> Session:
    messages = await owned_messages(request.app.state.redis, session_id, holder.user)
    return Session(id=session_id, messages=messages)


@router.get("/v1/models")
def list_models(_: CallerDep) -> ModelList:
    return ModelList(data=[ModelCard(id=CHAT_MODEL, created=0, owned_by="coursekit")])


async def run_tool(call: Mapping[str, Any], tools: Mapping[str, Any]) -> str:
    """One tool call's result (or its error) as the content of a `tool` message."""
    tool = tools.get(call["function"]["name"])
    if tool is None:
        return tool_error(f"there is no tool named {call['function']['name']!r}")
    try:
        arguments = tool.arguments.model_validate_json(call["function"]["arguments"])
    except ValidationError as error:
        return tool_error(f"invalid arguments: {error.errors()[0]['msg']}")
    try:
        # In a thread: classify_ticket runs the ticket model, a blocking call.
        return tool_result(await asyncio.to_thread(tool.run, arguments))
    except Exception as error:
        return tool_error(f"the tool failed: {error}")


async def answer(
    model: Any, conversation: list[dict[str, Any]], tools: Mapping[str, Any], options: dict
) -> tuple[Completion, Usage]:
    """The model's last message, after running the tools it asks for (bounded rounds)."""
    usage = Usage(0, 0)
    specs = tool_specs(tools)
    for _ in range(MAX_TOOL_ROUNDS):
        completion = await model.complete(conversation, tools=specs, **options)
        usage += completion.usage
        if completion.finish_reason != "tool_calls":
            return completion, usage
        conversation = [*conversation, completion.message]
        for call in completion.message["tool_calls"]:
            content = await run_tool(call, tools)
            conversation.append({"role": "tool", "tool_call_id": call["id"], "content": content})
    return text_completion(conversation, [ROUND_LIMIT_REPLY], "stop"), usage


async def chunks(
    chat: ChatCompletionRequest, completion: Completion, usage: Usage, completion_id: str
) -> AsyncIterator[str]:
    """The answer as OpenAI's chunks: role, content pieces, the finish, usage, [DONE]."""
    created = int(time.time())

    def event(choices: list[Any], usage_body: Any = None) -> str:
        chunk = ChatCompletionChunk(
            id=completion_id, created=created, model=chat.model, choices=choices, usage=usage_body
        )
        return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"

    choice, delta = openai_schemas.ChunkChoice, openai_schemas.Delta
    yield event([choice(index=0, delta=delta(role="assistant", content=""))])
    for piece in completion.deltas():
        if piece.content:
            yield event([choice(index=0, delta=delta(content=piece.content))])
    yield event([choice(index=0, delta=delta(), finish_reason=completion.finish_reason)])
    if chat.stream_options and chat.stream_options.include_usage:
        yield event([], openai_schemas.CompletionUsage(**usage.as_dict()))
    yield "data: [DONE]\n\n"


@router.post("/v1/chat/completions", response_model=ChatCompletion)
async def chat_completions(
    chat: ChatCompletionRequest,
    request: Request,
    holder: CallerDep,
    session_id: Annotated[str | None, Header(alias=SESSION_HEADER, max_length=64)] = None,
) -> Any:
    if chat.model != CHAT_MODEL:
        raise ServiceError(
            404, "model_not_found", f"The model '{chat.model}' does not exist.", param="model"
        )
    redis: Redis = request.app.state.redis
    new = [message.model_dump(exclude_none=True) for message in chat.messages]
    stored = await owned_messages(redis, session_id, holder.user) if session_id else []
    if session_id and len(stored) + len(new) + 1 > MAX_SESSION_MESSAGES:
        raise ServiceError(
            409, "session_full", f"A session holds at most {MAX_SESSION_MESSAGES} messages."
        )
    options = {
        "max_tokens": chat.max_completion_tokens or chat.max_tokens or DEFAULT_MAX_TOKENS,
        "seed": chat.seed,
        "temperature": chat.temperature,
        "stop": chat.stop,
    }
    try:
        completion, usage = await answer(
            request.app.state.chat_model, [*stored, *new], request.app.state.tools, options
        )
    except ConversationError as error:
        raise ServiceError(400, "invalid_conversation", str(error), param="messages") from None
    if session_id:
        reply = {"role": "assistant", "content": completion.message["content"]}
        await redis.rpush(f"session:{session_id}", *(json.dumps(m) for m in [*new, reply]))
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if chat.stream:
        return StreamingResponse(
            chunks(chat, completion, usage, completion_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    return ChatCompletion(
        id=completion_id,
        created=int(time.time()),
        model=chat.model,
        choices=[
            openai_schemas.Choice(
                index=0,
                message=openai_schemas.ChatCompletionMessage(content=completion.message["content"]),
                finish_reason=completion.finish_reason,
            )
        ],
        usage=openai_schemas.CompletionUsage(**usage.as_dict()),
    )
