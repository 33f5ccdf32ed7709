"""Step 08: stream a chat model's tokens to the client as Server-Sent Events.

Read README.md in this folder first: it states the exact wire format.
Grade your work with `pytest exercises/08_streaming_sse`.
"""

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

# TODO: refuse request bodies over MAX_BODY_SIZE bytes with a 413, before any route
# runs (lesson 04, "Request body size limits"; lesson 08, "Validating and bounding the
# request").
app = FastAPI(title="Chat streaming", version="1.0.0", docs_url=None, redoc_url=None)
add_offline_docs(app)  # /docs and /redoc without a CDN (see lesson 01)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    # TODO: bound the content to MAX_CONTENT_LENGTH characters ("Validating and
    # bounding the request").
    content: str


class ChatRequest(BaseModel):
    # TODO: the three fields of the table in README.md, with their defaults and bounds:
    # `messages` (1 to MAX_MESSAGES of them), `max_tokens` (1 to MAX_TOKENS, default 32)
    # and `seed` (default 0). Lesson section "Validating and bounding the request".
    pass


def get_chat_model() -> ChatModel:
    # Given: the tests replace this dependency with a model they control
    # (app.dependency_overrides[get_chat_model]), so always get the model through it.
    return get_model(delay=TOKEN_DELAY)


ChatModelDep = Annotated[ChatModel, Depends(get_chat_model)]


async def token_events(
    model: ChatModel, messages: list[Message], max_tokens: int, seed: int
) -> AsyncIterator[ServerSentEvent]:
    # TODO: stream the model's answer as the README's events, each sent the moment the
    # model yields its token ("Streaming tokens from a model", "Proving it streams"):
    # - a token event per token, numbered from 0 in this stream, its data a TokenData
    #   ("Event types, ids and the end marker", "Typed events: validated and documented");
    # - if the model raises, log it and send one error event (an ErrorData holding
    #   MODEL_FAILED) instead of letting the exception escape ("When the model fails
    #   mid-stream");
    # - last, always, the done event whose data is the bare text DONE.
    # Remove the `raise` and the bare `yield` below when you write it.
    raise NotImplementedError
    yield  # makes this function an async generator; delete it with the line above


# TODO: document the stream's events in /openapi.json with the responses that events.py
# gives ("Typed events: validated and documented").
@app.post("/chat/stream", response_class=EventSourceResponse)
async def chat_stream(chat: ChatRequest, model: ChatModelDep) -> AsyncIterator[ServerSentEvent]:
    # TODO: send every event of token_events for this chat, as token_events yields it
    # (response_class=EventSourceResponse makes each yielded event one SSE frame).
    raise NotImplementedError
    yield  # makes this function an async generator; delete it with the line above


@app.get("/", response_class=HTMLResponse)  # so /openapi.json says text/html
def chat_page() -> FileResponse:
    # TODO: answer with the page in PAGE (chat.html, beside this file) as text/html
    # ("A chat page: POST and fetch()").
    raise NotImplementedError
