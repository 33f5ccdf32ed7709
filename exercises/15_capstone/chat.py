"""The chat API (a suggested module: keep it, merge it into app.py, or split it further).

The routes' paths and bodies are the contract (README.md); what they depend on (the
caller's key, the rate limit, the Valkey client) is yours to add.
"""

from typing import Any

from contract import ChatCompletionRequest, ModelList, Session, SessionCreated
from fastapi import APIRouter

router = APIRouter()


@router.post("/v1/sessions", status_code=201)
async def create_session() -> SessionCreated:
    # TODO: a new session owned by the caller, kept in Valkey (lesson: "Sessions in Valkey").
    raise NotImplementedError


@router.get("/v1/sessions/{session_id}")
async def read_session(session_id: str) -> Session:
    # TODO: the caller's session and its messages; 404 otherwise (lesson: "Sessions in Valkey").
    raise NotImplementedError


@router.get("/v1/models")
def list_models() -> ModelList:
    # TODO: the one chat model (lesson: "The OpenAI contract, end to end").
    raise NotImplementedError


@router.post("/v1/chat/completions")
async def chat_completions(chat: ChatCompletionRequest) -> Any:
    # TODO: the model's answer, after the tools it asks for, plain or streamed, continuing
    # the session of X-Session-ID (lesson: "The OpenAI contract, end to end").
    raise NotImplementedError
