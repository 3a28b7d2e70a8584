"""Conversions between the three agent protocols, so every agent answers every endpoint.

Chat completions <-> ChatAgent messages <-> Responses items. Pure functions on typed objects and dicts.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from servelm.agents import (
    ChatAgentMessage,
    ChatAgentResponse,
    ChatChoice,
    ChatCompletionResponse,
    ChatMessage,
    ResponsesAgentRequest,
    ToolCall,
)
from servelm.agents.chat_types import FunctionCall, content_text
from servelm.agents.ids import new_id
from servelm.agents.responses_agent import ResponsesAgent


# ------------------------------------------------------------------ chat completions -> agent messages
def chat_to_agent_messages(messages: list[ChatMessage]) -> list[ChatAgentMessage]:
    """OpenAI chat messages as ChatAgent messages (content parts joined to text)."""
    out = []
    for m in messages:
        content = content_text(m.content) if m.content is not None else (None if m.tool_calls else "")
        out.append(
            ChatAgentMessage(
                role=m.role, content=content, name=m.name, tool_calls=m.tool_calls, tool_call_id=m.tool_call_id
            )
        )
    return out


def agent_response_to_chat_message(response: ChatAgentResponse) -> tuple[ChatMessage, str]:
    """Collapse an agent's messages into one assistant message, plus its finish reason.

    Assistant texts are joined; tool calls that the agent did not already answer with a tool message
    are kept (the client must run them), and the finish reason is then ``tool_calls``.
    """
    answered = {m.tool_call_id for m in response.messages if m.role == "tool"}
    texts = [m.content for m in response.messages if m.role == "assistant" and m.content]
    calls = [
        c for m in response.messages if m.role == "assistant" for c in (m.tool_calls or []) if c.id not in answered
    ]
    message = ChatMessage(
        role="assistant", content="\n\n".join(texts) if texts else (None if calls else ""), tool_calls=calls or None
    )
    return message, ("tool_calls" if calls else (response.finish_reason or "stop"))


def agent_response_to_chat(response: ChatAgentResponse, model: str) -> ChatCompletionResponse:
    """A ChatAgent's answer as a chat-completions response."""
    message, finish = agent_response_to_chat_message(response)
    return ChatCompletionResponse(
        model=model,
        choices=[ChatChoice(message=message, finish_reason=finish)],
        usage=response.usage,
        custom_outputs=response.custom_outputs,
    )


# ------------------------------------------------------------------ chat completions <-> responses items
def chat_to_responses_input(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Chat messages as Responses input items (tool calls -> function_call, tool -> function_call_output)."""
    items: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            items.append({"type": "function_call_output", "call_id": m.tool_call_id, "output": content_text(m.content)})
            continue
        if m.content is not None or not m.tool_calls:
            items.append({"type": "message", "role": m.role, "content": content_text(m.content)})
        for call in m.tool_calls or []:
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.id,
                    "name": call.function.name,
                    "arguments": call.function.arguments,
                    "id": new_id("fc"),
                }
            )
    return items


def chat_tools_to_responses(tools: Optional[list[Any]]) -> Optional[list[dict[str, Any]]]:
    """OpenAI chat tool definitions in the Responses API's flat form."""
    if not tools:
        return None
    return [{"type": "function", **t.function.model_dump(exclude_none=True)} for t in tools]


def responses_output_to_chat_message(output: list[dict[str, Any]]) -> tuple[ChatMessage, str]:
    """Responses output items as one assistant message (text joined, function calls as tool calls). A function call
    the agent answered itself (its ``function_call_output`` is in the same output) was a step of the agent's, not a
    call for the client to make: it is left out, as its output is."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    answered = {item.get("call_id") for item in output if item.get("type") == "function_call_output"}
    for item in output:
        kind = item.get("type")
        if kind == "message":
            texts.append(_output_text(item))
        elif kind == "function_call" and (item.get("call_id") or item.get("id")) not in answered:
            calls.append(
                ToolCall(
                    id=item.get("call_id") or item.get("id") or new_id("call"),
                    function=FunctionCall(name=item["name"], arguments=item.get("arguments", "")),
                )
            )
    message = ChatMessage(
        role="assistant", content="".join(texts) if texts or not calls else None, tool_calls=calls or None
    )
    return message, ("tool_calls" if calls else "stop")


def _output_text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(
        p.get("text", "")
        for p in content or []
        if isinstance(p, dict) and p.get("type") in ("output_text", "text", None)
    )


# ------------------------------------------------------------------ responses request -> agent messages
def responses_to_agent_messages(request: ResponsesAgentRequest) -> list[ChatAgentMessage]:
    """Responses input items as ChatAgent messages (instructions become a leading system message)."""
    out: list[ChatAgentMessage] = []
    if request.instructions:
        out.append(ChatAgentMessage(role="system", content=request.instructions))
    for item in request.input:
        data = item.model_dump(exclude_none=True)
        kind = data.get("type") or "message"
        if kind == "message":
            out.append(ChatAgentMessage(role=item.role or "user", content=item.text()))
        elif kind == "function_call":
            call = ToolCall(
                id=data.get("call_id") or new_id("call"),
                function=FunctionCall(name=data["name"], arguments=data.get("arguments", "")),
            )
            out.append(ChatAgentMessage(role="assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            output = data.get("output")
            out.append(
                ChatAgentMessage(
                    role="tool",
                    tool_call_id=data.get("call_id"),
                    content=output if isinstance(output, str) else json.dumps(output),
                )
            )
    return out


def responses_to_chat_messages(request: ResponsesAgentRequest) -> list[ChatMessage]:
    """Responses input items as OpenAI chat messages."""
    return [
        ChatMessage(role=m.role, content=m.content, tool_calls=m.tool_calls, tool_call_id=m.tool_call_id)
        for m in responses_to_agent_messages(request)
    ]


def agent_messages_to_output_items(messages: list[ChatAgentMessage]) -> list[dict[str, Any]]:
    """ChatAgent messages as Responses output items."""
    items: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            items.append(ResponsesAgent.create_function_call_output_item(m.tool_call_id or "", m.content or ""))
            continue
        if m.content:
            items.append(ResponsesAgent.create_text_output_item(m.content, m.id or new_id("msg")))
        for call in m.tool_calls or []:
            items.append(
                ResponsesAgent.create_function_call_item(
                    new_id("fc"), call.id, call.function.name, call.function.arguments
                )
            )
    return items


def chat_message_to_output_items(message: ChatMessage) -> list[dict[str, Any]]:
    """One assistant chat message as Responses output items."""
    return agent_messages_to_output_items(
        [
            ChatAgentMessage(
                role="assistant",
                content=message.text() if message.content is not None else None,
                tool_calls=message.tool_calls,
            )
        ]
        if (message.content is not None or message.tool_calls)
        else []
    )
