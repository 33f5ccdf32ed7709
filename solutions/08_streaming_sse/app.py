"""Step 08, solved: a chat model's tokens streamed to the client as Server-Sent Events."""

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

from events import DONE, STREAM_RESPONSES, ErrorData, TokenData
from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from coursekit.docs import add_offline_docs
from coursekit.llm import ChatModel, get_model

# A short pause per token, so a browser shows the answer appear word by word.
TOKEN_DELAY = 0.02
MAX_TOKENS = 256
MAX_MESSAGES = 32
MAX_CONTENT_LENGTH = 4000  # characters per message
# 1 MiB: the longest valid chat (32 messages of 4,000 characters) fits, even escaped.
MAX_BODY_SIZE = 1_048_576
# What the client reads when the model fails: never the exception's text, which may
# name hosts, keys or internals.
MODEL_FAILED = "The model failed while writing this answer; it is incomplete."
PAGE = Path(__file__).parent / "chat.html"

logger = logging.getLogger(__name__)

app = FastAPI(
    title="Chat streaming",
    version="1.0.0",
    docs_url=None,
    redoc_url=None,
    # Starlette stops reading a body past this size: a client cannot make us buffer 2 GB.
    max_body_size=MAX_BODY_SIZE,
)
add_offline_docs(app)  # /docs and /redoc without a CDN (see lesson 01)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_CONTENT_LENGTH)


class ChatRequest(BaseModel):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int = Field(default=32, ge=1, le=MAX_TOKENS)
    seed: int = 0


def get_chat_model() -> ChatModel:
    return get_model(delay=TOKEN_DELAY)


ChatModelDep = Annotated[ChatModel, Depends(get_chat_model)]


async def token_events(
    model: ChatModel, messages: list[Message], max_tokens: int, seed: int
) -> AsyncIterator[ServerSentEvent]:
    index = 0
    try:
        # One event per token, as soon as the model yields it: never collect the answer.
        async for token in model.stream_chat(messages, max_tokens=max_tokens, seed=seed):
            yield ServerSentEvent(event="token", id=str(index), data=TokenData(token=token))
            index += 1
    except Exception:
        # The 200 went out with the first byte: only an event can tell the client now.
        # (A client disconnect is a CancelledError, not an Exception: it is not caught.)
        logger.exception("The model failed after %d tokens", index)
        yield ServerSentEvent(event="error", data=ErrorData(message=MODEL_FAILED))
    # raw_data, not data: the end marker is the bare text [DONE], not the JSON string "[DONE]".
    yield ServerSentEvent(event="done", raw_data=DONE)


@app.post("/chat/stream", response_class=EventSourceResponse, responses=STREAM_RESPONSES)
async def chat_stream(chat: ChatRequest, model: ChatModelDep) -> AsyncIterator[ServerSentEvent]:
    async for event in token_events(model, chat.messages, chat.max_tokens, chat.seed):
        yield event


@app.get("/", response_class=HTMLResponse)  # so /openapi.json says text/html
def chat_page() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html")
