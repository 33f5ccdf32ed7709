"""Step 09: a chat backend. Sessions owned by a user, their history in SQLite, and a
reply that may call tools, answered at once or streamed as Server-Sent Events.

Read README.md in this folder first. Grade your work with
`pytest exercises/09_chat_sessions`.
"""

from collections.abc import AsyncIterator
from typing import Annotated, Any

from chat_schemas import (
    CREATE_RESPONSES,
    MAX_BODY_SIZE,
    MESSAGE_RESPONSES,
    SESSION_RESPONSES,
    NewMessage,
    NewSession,
    Reply,
    Session,
    SessionCreated,
    ToolActivity,
    TurnResult,
)
from conversation import run_turn, stream_turn
from fastapi import Depends, FastAPI, HTTPException, Response, status
from fastapi.sse import EventSourceResponse, ServerSentEvent
from service import ChatModelDep, ConnectionDep, SettingsDep, ToolsDep, UserDep, lifespan
from store import (
    append_messages,
    count_messages,
    count_sessions,
    create_session,
    delete_session,
    load_messages,
    session_owner,
)

from coursekit.docs import add_offline_docs

app = FastAPI(
    title="Chat sessions",
    version="1.0.0",
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
    max_body_size=MAX_BODY_SIZE,  # step 04: a client cannot make us buffer a huge body
)
add_offline_docs(app)


def owned_session(session_id: str, user: UserDep, connection: ConnectionDep) -> str:
    """The session id from the path, if the caller owns that session; 404 otherwise."""
    # TODO: return session_id when `user` owns the session (store.session_owner); for a
    # session of another user, and for an id no session has, raise the same 404.
    # Lesson: "Sessions belong to a user".
    raise NotImplementedError


OwnedSessionDep = Annotated[str, Depends(owned_session)]


def open_history(
    session_id: OwnedSessionDep, connection: ConnectionDep, settings: SettingsDep
) -> list[dict[str, Any]]:
    """The stored messages of a session that still has room for a turn; 409 if full."""
    # TODO: a session that already holds settings.max_session_messages messages is full:
    # raise a 409 whose detail says so. Otherwise return its messages, in order.
    # Lesson: "Checks before the stream starts".
    raise NotImplementedError


HistoryDep = Annotated[list[dict[str, Any]], Depends(open_history)]


@app.post("/sessions", responses=CREATE_RESPONSES)
def create(
    new: NewSession, user: UserDep, connection: ConnectionDep, settings: SettingsDep
) -> SessionCreated:
    # TODO: create a session of `user` with the body's system prompt and answer its id,
    # with the status 201 Created. A user who already holds settings.max_sessions
    # sessions gets a 409 instead. Lessons: "One row per message", "Bounding what a
    # client can send".
    raise NotImplementedError


@app.get("/sessions/{session_id}", responses=SESSION_RESPONSES)
def read(session_id: OwnedSessionDep, connection: ConnectionDep) -> Session:
    # TODO: answer the session's id and its stored messages, oldest first.
    # Lesson: "One row per message".
    raise NotImplementedError


@app.post("/sessions/{session_id}/messages", responses=MESSAGE_RESPONSES)
async def post_message(
    message: NewMessage,
    session_id: OwnedSessionDep,
    history: HistoryDep,
    model: ChatModelDep,
    tools: ToolsDep,
    settings: SettingsDep,
    connection: ConnectionDep,
) -> Reply:
    # TODO: run the turn (run_turn) on the history and the user's new message, then store
    # the user's message and every message the turn added, in order, and answer the
    # turn's reply (TurnResult.reply()). Lesson: "The tool-call loop".
    raise NotImplementedError


@app.post(
    "/sessions/{session_id}/messages/stream",
    response_class=EventSourceResponse,
    responses=MESSAGE_RESPONSES,
)
async def post_message_stream(
    message: NewMessage,
    session_id: OwnedSessionDep,
    history: HistoryDep,
    model: ChatModelDep,
    tools: ToolsDep,
    settings: SettingsDep,
    connection: ConnectionDep,
) -> AsyncIterator[ServerSentEvent]:
    # TODO: the same turn with stream_turn, sent as it happens: each ToolActivity as an
    # event named "tool", each TokenEvent as an event named "token", both with the item
    # as data; at the TurnResult, store the turn as post_message does and send an event
    # named "done" whose data is the reply. Lesson: "Streaming a turn".
    raise NotImplementedError
    yield  # makes this function an async generator; delete it with the line above


@app.delete("/sessions/{session_id}", responses=SESSION_RESPONSES)
def delete(session_id: OwnedSessionDep, connection: ConnectionDep) -> Response:
    # TODO: delete the session and its messages; answer 204 No Content, no body.
    # Lesson: "One row per message".
    raise NotImplementedError
