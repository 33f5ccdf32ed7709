"""Step 08: stream a chat model's tokens to the client as Server-Sent Events.

Read README.md in this folder first: it states the exact wire format.
Grade your work with `pytest exercises/08_streaming_sse`.
"""

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
    # TODO: declare three fields:
    # - `messages`: a list of Message with at least one item (Field(min_length=1));
    # - `max_tokens`: an int from 1 to MAX_TOKENS, default 32 (Field(default=..., ge=..., le=...));
    # - `seed`: an int, default 0.
    pass


def get_chat_model() -> ChatModel:
    # Given: the tests replace this dependency with a model they control
    # (app.dependency_overrides[get_chat_model]), so always get the model through it.
    return get_model(delay=TOKEN_DELAY)


ChatModelDep = Annotated[ChatModel, Depends(get_chat_model)]


async def token_events(
    model: ChatModel, messages: list[Message], max_tokens: int, seed: int
) -> AsyncIterator[ServerSentEvent]:
    # TODO: `async for token in model.stream_chat(messages, max_tokens=..., seed=...)`, and
    # for each token yield ServerSentEvent(event="token", id=<"0", "1", ...>, data={"token": token})
    # at once, inside the loop (never collect the tokens first). After the loop, yield one
    # ServerSentEvent(event="done", raw_data="[DONE]"). Remove the `raise` and keep the `yield`s.
    raise NotImplementedError
    yield  # makes this function an async generator; delete it with the line above


@app.post("/chat/stream", response_class=EventSourceResponse)
async def chat_stream(request: ChatRequest, model: ChatModelDep) -> AsyncIterator[ServerSentEvent]:
    # TODO: yield every event of token_events(model, request.messages, request.max_tokens,
    # request.seed). response_class=EventSourceResponse makes FastAPI send each yielded
    # ServerSentEvent as text/event-stream, as soon as it is yielded.
    raise NotImplementedError
    yield  # makes this function an async generator; delete it with the line above


@app.get("/chat/stream", response_class=EventSourceResponse)
async def chat_stream_get(
    model: ChatModelDep,
    prompt: Annotated[str, Query(min_length=1)],
    max_tokens: Annotated[int, Query()] = 32,
    seed: int = 0,
) -> AsyncIterator[ServerSentEvent]:
    # TODO: bound max_tokens like the POST body (Query(ge=1, le=MAX_TOKENS)). Then make the
    # prompt a one-message chat, [Message(role="user", content=prompt)], and yield every
    # event of token_events for it, exactly as the POST route does.
    raise NotImplementedError
    yield  # makes this function an async generator; delete it with the line above


@app.get("/")
def chat_page() -> FileResponse:
    # TODO: return FileResponse(PAGE, media_type="text/html"): the page in chat.html opens
    # an EventSource on GET /chat/stream.
    raise NotImplementedError
