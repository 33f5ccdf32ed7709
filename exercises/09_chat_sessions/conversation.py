"""Step 09: the conversation logic. You write the four functions of this file.

Read README.md in this folder first. Grade your work with
`pytest exercises/09_chat_sessions`.
"""

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from chat_schemas import ROUND_LIMIT_REPLY, TokenEvent, ToolActivity, TurnResult
from pydantic import ValidationError
from service import Settings
from starlette.concurrency import run_in_threadpool
from toolbox import Tool, tool_error, tool_result, tool_specs

from coursekit.llm import ToolChatModel, Usage, prompt_tokens


def trim_history(messages: Sequence[Mapping[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The system prompt and the newest whole turns whose tokens fit in `budget`."""
    # TODO: return the history the model may read, without changing `messages`:
    # - the first message, if it is the system prompt, always;
    # - then the newest turns whose tokens (prompt_tokens), with the system prompt's, add
    #   up to at most `budget`; a turn starts at a user message and holds everything up
    #   to the next one, so a tool call and its result are never split;
    # - stop at the first turn, from the newest, that does not fit (no older one after
    #   it), but always keep the newest turn.
    # Lesson: "Trimming to a context budget".
    raise NotImplementedError


def run_tool_call(call: Mapping[str, Any], tools: Mapping[str, Tool]) -> dict[str, Any]:
    """Run one tool call; its `tool` message. Every failure becomes an error message."""
    # TODO: return {"role": "tool", "tool_call_id": <the call's id>, "content": ...} where
    # the content is tool_result(...) of what the tool returned, run with its arguments
    # validated by the tool's model (tool.arguments). Never raise: an unknown tool
    # (name it), arguments that are not valid JSON or fail validation (the tool does not
    # run), and any exception the tool raises (keep its message) each become
    # tool_error("<what went wrong>"), for the model to read.
    # Lessons: "Tools the model can call", "When a tool fails".
    raise NotImplementedError


async def run_turn(
    model: ToolChatModel,
    history: Sequence[Mapping[str, Any]],
    tools: Mapping[str, Tool],
    settings: Settings,
) -> TurnResult:
    """Call the model, run its tool calls, call it again, ... at most max_tool_rounds times."""
    # TODO: `history` ends with the user's new message. For each round, at most
    # settings.max_tool_rounds of them:
    # - give the model the history so far, trimmed to settings.context_budget, the tools'
    #   specs (tool_specs) and max_tokens=settings.max_reply_tokens (model.complete);
    # - keep its message; without tool calls, it is the answer: return;
    # - otherwise run each call, in order, and keep each tool message (run_tool_call
    #   can be slow: run it off the event loop, with run_in_threadpool).
    # If the last round still asked for tools, end with the assistant message
    # ROUND_LIMIT_REPLY. Return TurnResult(the messages added, in order, the usage of
    # every model call added up).
    # Lessons: "The tool-call loop", "Bounding the loop", "Counting tokens".
    raise NotImplementedError


async def stream_turn(
    model: ToolChatModel,
    history: Sequence[Mapping[str, Any]],
    tools: Mapping[str, Tool],
    settings: Settings,
) -> AsyncIterator[TokenEvent | ToolActivity | TurnResult]:
    """run_turn, as it happens: each token, each tool run, then the TurnResult."""
    # TODO: the same loop as run_turn, with model.stream_complete: yield a TokenEvent for
    # each piece of content as it comes, a ToolActivity (the call and its tool message's
    # content) as soon as each tool has run, and last the TurnResult, equal to what
    # run_turn returns for the same model. Lesson: "Streaming a turn".
    raise NotImplementedError
    yield  # makes this function an async generator; delete it with the line above
