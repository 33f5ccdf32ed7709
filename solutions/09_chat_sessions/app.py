"""Step 09, solved: a chat backend. Sessions owned by a user, their history in SQLite,
and a reply that may call tools, answered at once or streamed as Server-Sent Events."""

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
    # The same 404 for "no such session" and "someone else's": a 403 would tell a caller
    # that the id exists, so ids could be probed.
    if session_owner(connection, session_id) != user:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such session")
    return session_id


OwnedSessionDep = Annotated[str, Depends(owned_session)]


def open_history(
    session_id: OwnedSessionDep, connection: ConnectionDep, settings: SettingsDep
) -> list[dict[str, Any]]:
    """The stored messages of a session that still has room for a turn; 409 if full."""
    # A dependency, so the check runs before a stream has sent its 200.
    if count_messages(connection, session_id) >= settings.max_session_messages:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"This session is full ({settings.max_session_messages} messages): "
            "start a new session.",
        )
    return load_messages(connection, session_id)


HistoryDep = Annotated[list[dict[str, Any]], Depends(open_history)]


@app.post("/sessions", responses=CREATE_RESPONSES, status_code=status.HTTP_201_CREATED)
def create(
    new: NewSession, user: UserDep, connection: ConnectionDep, settings: SettingsDep
) -> SessionCreated:
    if count_sessions(connection, user) >= settings.max_sessions:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"You hold {settings.max_sessions} sessions, the most allowed: "
            "delete one first.",
        )
    return SessionCreated(id=create_session(connection, user, new.system))


@app.get("/sessions/{session_id}", responses=SESSION_RESPONSES)
def read(session_id: OwnedSessionDep, connection: ConnectionDep) -> Session:
    return Session(id=session_id, messages=load_messages(connection, session_id))


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
    user_message = {"role": "user", "content": message.content}
    # The store's calls stay on the event loop: on a local SQLite file an append or a load
    # takes well under a millisecond (about 0.1 and 0.4 ms, timed on the course machine).
    result = await run_turn(model, [*history, user_message], tools, settings)
    # The whole turn at once, after the loop: a failed turn leaves no half of it stored.
    append_messages(connection, session_id, [user_message, *result.messages])
    return result.reply()


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
    user_message = {"role": "user", "content": message.content}
    async for item in stream_turn(model, [*history, user_message], tools, settings):
        # Named events need ServerSentEvent; each payload is a typed model all the same.
        if isinstance(item, TurnResult):
            append_messages(connection, session_id, [user_message, *item.messages])
            yield ServerSentEvent(event="done", data=item.reply())
        elif isinstance(item, ToolActivity):
            yield ServerSentEvent(event="tool", data=item)
        else:
            yield ServerSentEvent(event="token", data=item)


@app.delete(
    "/sessions/{session_id}", responses=SESSION_RESPONSES, status_code=status.HTTP_204_NO_CONTENT
)
def delete(session_id: OwnedSessionDep, connection: ConnectionDep) -> Response:
    delete_session(connection, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
