"""Step 09, solved: the conversation logic. Trim the history to the model's budget, run
the tool calls the model asks for, and loop until it answers in text (or the bound)."""

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
    messages = [dict(message) for message in messages]
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    # A turn starts at a user message and holds everything until the next one, so a tool
    # call and its result are always in the same turn: kept or dropped together.
    turns: list[list[dict[str, Any]]] = []
    for message in messages[len(system) :]:
        if message["role"] == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    kept: list[dict[str, Any]] = []
    used = prompt_tokens(system)
    for turn in reversed(turns):
        cost = prompt_tokens(turn)
        # The newest turn is always kept: it holds the question being answered.
        if kept and used + cost > budget:
            break
        kept[:0] = turn
        used += cost
    return [*system, *kept]


def run_tool_call(call: Mapping[str, Any], tools: Mapping[str, Tool]) -> dict[str, Any]:
    """Run one tool call; its `tool` message. Every failure becomes an error message."""
    function = call["function"]
    tool = tools.get(function["name"])
    if tool is None:
        content = tool_error(
            f"There is no tool named {function['name']!r}. The tools are: {', '.join(tools)}."
        )
    else:
        try:
            # One step: parse the JSON text and validate it against the tool's model.
            arguments = tool.arguments.model_validate_json(function["arguments"])
        except ValidationError as error:
            content = tool_error(f"Invalid arguments for {tool.name}: {error}")
        else:
            try:
                content = tool_result(tool.run(arguments))
            except Exception as error:  # any failure of the tool is the model's to read
                content = tool_error(f"{tool.name} failed: {type(error).__name__}: {error}")
    return {"role": "tool", "tool_call_id": call["id"], "content": content}


async def run_turn(
    model: ToolChatModel,
    history: Sequence[Mapping[str, Any]],
    tools: Mapping[str, Tool],
    settings: Settings,
) -> TurnResult:
    """Call the model, run its tool calls, call it again, ... at most max_tool_rounds times."""
    specs = tool_specs(tools)
    added: list[dict[str, Any]] = []
    usage = Usage(0, 0)
    for _ in range(settings.max_tool_rounds):
        prompt = trim_history([*history, *added], settings.context_budget)
        completion = await model.complete(prompt, tools=specs, max_tokens=settings.max_reply_tokens)
        usage += completion.usage
        message = dict(completion.message)
        added.append(message)
        calls = message.get("tool_calls")
        if not calls:
            return TurnResult(added, usage)
        for call in calls:
            # A tool may be CPU-bound (a model): off the event loop.
            added.append(await run_in_threadpool(run_tool_call, call, tools))
    added.append({"role": "assistant", "content": ROUND_LIMIT_REPLY})
    return TurnResult(added, usage)


async def stream_turn(
    model: ToolChatModel,
    history: Sequence[Mapping[str, Any]],
    tools: Mapping[str, Tool],
    settings: Settings,
) -> AsyncIterator[TokenEvent | ToolActivity | TurnResult]:
    """run_turn, as it happens: each token, each tool run, then the TurnResult."""
    specs = tool_specs(tools)
    added: list[dict[str, Any]] = []
    usage = Usage(0, 0)
    for _ in range(settings.max_tool_rounds):
        prompt = trim_history([*history, *added], settings.context_budget)
        tokens: list[str] = []
        calls: list[Any] = []
        async for delta in model.stream_complete(
            prompt, tools=specs, max_tokens=settings.max_reply_tokens
        ):
            if delta.content:
                tokens.append(delta.content)
                yield TokenEvent(token=delta.content)
            if delta.tool_calls:
                calls.extend(delta.tool_calls)
            if delta.usage:
                usage += delta.usage
        if not calls:
            added.append({"role": "assistant", "content": "".join(tokens)})
            yield TurnResult(added, usage)
            return
        added.append({"role": "assistant", "content": "".join(tokens) or None, "tool_calls": calls})
        for call in calls:
            message = await run_in_threadpool(run_tool_call, call, tools)
            added.append(message)
            yield ToolActivity(
                id=call["id"],
                name=call["function"]["name"],
                arguments=call["function"]["arguments"],
                content=message["content"],
            )
    added.append({"role": "assistant", "content": ROUND_LIMIT_REPLY})
    yield TurnResult(added, usage)
