"""Step 08, solved: a chat model's tokens streamed to the client as Server-Sent Events."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query
from fastapi.responses import FileResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from coursekit.docs import add_offline_docs
from coursekit.llm import ChatModel, get_model

# A short pause per token, so a browser shows the answer appear word by word.
TOKEN_DELAY = 0.02
MAX_TOKENS = 256
PAGE = Path(__file__).parent / "chat.html"

app = FastAPI(title="Chat streaming", version="1.0.0", docs_url=None, redoc_url=None)
add_offline_docs(app)  # /docs and /redoc without a CDN (see lesson 01)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int = Field(default=32, ge=1, le=MAX_TOKENS)
    seed: int = 0


def get_chat_model() -> ChatModel:
    return get_model(delay=TOKEN_DELAY)


ChatModelDep = Annotated[ChatModel, Depends(get_chat_model)]


async def token_events(
    model: ChatModel, messages: list[Message], max_tokens: int, seed: int
) -> AsyncIterator[ServerSentEvent]:
    # One event per token, as soon as the model yields it: never collect the answer first.
    index = 0
    async for token in model.stream_chat(messages, max_tokens=max_tokens, seed=seed):
        yield ServerSentEvent(event="token", id=str(index), data={"token": token})
        index += 1
    # raw_data, not data: the end marker is the bare text [DONE], not the JSON string "[DONE]".
    yield ServerSentEvent(event="done", raw_data="[DONE]")


@app.post("/chat/stream", response_class=EventSourceResponse)
async def chat_stream(request: ChatRequest, model: ChatModelDep) -> AsyncIterator[ServerSentEvent]:
    async for event in token_events(model, request.messages, request.max_tokens, request.seed):
        yield event


@app.get("/chat/stream", response_class=EventSourceResponse)
async def chat_stream_get(
    model: ChatModelDep,
    prompt: Annotated[str, Query(min_length=1)],
    max_tokens: Annotated[int, Query(ge=1, le=MAX_TOKENS)] = 32,
    seed: int = 0,
) -> AsyncIterator[ServerSentEvent]:
    # A browser's EventSource can only send a GET without a body: the prompt comes as a
    # query parameter and becomes a one-message chat.
    messages = [Message(role="user", content=prompt)]
    async for event in token_events(model, messages, max_tokens, seed):
        yield event


@app.get("/")
def chat_page() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html")
