"""Conversions between the Responses API's items and Chat Completions messages, for agents that call a chat LLM.

A ``ResponsesAgent`` receives Responses input items but most LLM clients speak Chat Completions: these turn the
items into chat messages (``to_chat_messages``) and a stream of chat completion chunks, or of LangChain
messages, back into Responses stream events (``chat_stream_to_responses_events``). They behave as MLflow's
``ResponsesAgent.prep_msgs_for_cc_llm`` / ``output_to_responses_items_stream`` / ``responses_agent_output_reducer``
(which call them), so agent code written for MLflow runs unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any, Optional

from .ids import new_id
from .responses_types import ResponsesAgentResponse, ResponsesAgentStreamEvent

_CHAT_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def text_output_item(
    text: str, id: Optional[str], annotations: Optional[list[dict[str, Any]]] = None
) -> dict[str, Any]:
    """An assistant message item holding one ``output_text`` part."""
    return {
        "type": "message",
        "id": id or new_id("msg"),
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}],
    }


def text_delta(delta: str, item_id: Optional[str], output_index: int = 0, content_index: int = 0) -> dict[str, Any]:
    """A ``response.output_text.delta`` event body (wire-valid: indexes and ``logprobs: []``)."""
    return {
        "type": "response.output_text.delta",
        "item_id": item_id or "",
        "delta": delta,
        "output_index": output_index,
        "content_index": content_index,
        "logprobs": [],
    }


def function_call_item(id: Optional[str], call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A ``function_call`` output item (the model asks the caller to run a tool)."""
    return {
        "type": "function_call",
        "id": id or new_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def function_call_output_item(call_id: str, output: str) -> dict[str, Any]:
    """A ``function_call_output`` item (a tool's result, fed back as input)."""
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def reasoning_item(id: Optional[str], reasoning_text: str) -> dict[str, Any]:
    """A ``reasoning`` item with one summary text."""
    return {
        "type": "reasoning",
        "id": id or new_id("rs"),
        "summary": [{"type": "summary_text", "text": reasoning_text}],
    }


def _tool_call(id: str, name: str, arguments: Optional[str]) -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"arguments": arguments or "{}", "name": name}}


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def item_to_chat_messages(item: dict[str, Any]) -> list[dict[str, Any]]:
    """One Responses item as the Chat Completions messages that carry it (none for an item chat has no place
    for). An assistant tool call keeps a short text: some chat models refuse empty content."""
    kind = item.get("type")
    if kind == "function_call":
        return [
            {
                "role": "assistant",
                "content": "tool call",
                "tool_calls": [_tool_call(item["call_id"], item["name"], item.get("arguments"))],
            }
        ]
    if kind == "message" and isinstance(item.get("content"), list):
        return [{"role": item["role"], "content": part["text"]} for part in item["content"]]
    if kind == "reasoning":
        return [{"role": "assistant", "content": json.dumps(item["summary"])}]
    if kind == "function_call_output":
        return [{"role": "tool", "content": _as_text(item["output"]), "tool_call_id": item["call_id"]}]
    if kind == "mcp_approval_request":
        return [
            {
                "role": "assistant",
                "content": "mcp approval request",
                "tool_calls": [_tool_call(item["id"], item["name"], item.get("arguments"))],
            }
        ]
    if kind == "mcp_approval_response":
        return [{"role": "tool", "content": str(item["approve"]), "tool_call_id": item["approval_request_id"]}]
    message = {k: v for k, v in item.items() if k in _CHAT_KEYS}
    return [message] if message else []


def to_chat_messages(items: Iterable[Any]) -> list[dict[str, Any]]:
    """Responses input items (dicts or the typed items) as Chat Completions messages."""
    messages: list[dict[str, Any]] = []
    for item in items:
        messages.extend(item_to_chat_messages(item.model_dump() if hasattr(item, "model_dump") else item))
    return messages


def chat_stream_to_responses_events(
    chunks: Iterator[Any], aggregator: Optional[list[dict[str, Any]]] = None
) -> Iterator[ResponsesAgentStreamEvent]:
    """Chat completion chunks (dicts) or LangChain messages as Responses stream events: a text delta per
    piece of text, then one ``response.output_item.done`` per finished item (the whole text, each tool call,
    reasoning). ``aggregator``, when given, is extended with the finished items."""
    first = next(chunks, None)
    if first is None:
        return
    rest = chain([first], chunks)
    if _is_langchain_message(first):
        yield from _langchain_events(rest, aggregator)
    else:
        yield from _chat_chunk_events(rest, aggregator)


def _done(item: dict[str, Any], aggregator: Optional[list[dict[str, Any]]]) -> ResponsesAgentStreamEvent:
    if aggregator is not None:
        aggregator.append(item)
    return ResponsesAgentStreamEvent(type="response.output_item.done", item=item)


def _chat_chunk_events(
    chunks: Iterator[dict[str, Any]], aggregator: Optional[list[dict[str, Any]]]
) -> Iterator[ResponsesAgentStreamEvent]:
    text = ""
    reasoning = ""
    calls: dict[int, dict[str, Any]] = {}  # tool call index -> {"id", "name", "arguments"}
    message_id = None
    for chunk in chunks:
        if not chunk.get("choices"):
            continue
        delta = chunk["choices"][0]["delta"]
        message_id = chunk.get("id")
        content = delta.get("content")
        if delta.get("tool_calls"):
            for call in delta["tool_calls"]:
                function = call.get("function") or {}
                index = call.get("index", 0)
                if index not in calls:  # the first piece names the call; later ones add to its arguments
                    calls[index] = {
                        "id": call.get("id"),
                        "name": function.get("name", ""),
                        "arguments": function.get("arguments", ""),
                    }
                else:
                    calls[index]["arguments"] += function.get("arguments", "") or ""
        elif content is not None:
            if isinstance(content, list):  # content parts: text and reasoning summaries
                for part in content:
                    if not isinstance(part, dict):
                        continue
                    if part.get("type") == "reasoning":
                        reasoning += (part.get("summary") or [{}])[0].get("text", "")
                    if part.get("type") == "text" and part.get("text"):
                        text += part["text"]
                        yield ResponsesAgentStreamEvent(**text_delta(part["text"], message_id))
            elif reasoning:  # the reasoning has ended
                yield _done(reasoning_item(message_id, reasoning), aggregator)
                reasoning = ""
            if isinstance(content, str):
                text += content
                yield ResponsesAgentStreamEvent(**text_delta(content, message_id))
    if text:
        yield _done(text_output_item(text, message_id), aggregator)
    for index in sorted(calls):
        call = calls[index]
        yield _done(function_call_item(message_id, call["id"], call["name"], call["arguments"]), aggregator)


def _is_langchain_message(value: Any) -> bool:
    return hasattr(value, "model_dump") and hasattr(value, "content") and type(value).__module__.startswith("langchain")


def _langchain_events(
    messages: Iterator[Any], aggregator: Optional[list[dict[str, Any]]]
) -> Iterator[ResponsesAgentStreamEvent]:
    """LangChain messages (AI text, AI tool calls, tool results) as finished items; user messages skipped."""
    for message in messages:
        data = message.model_dump()
        role = data.get("type")
        if role == "ai":
            if data.get("content"):
                yield _done(text_output_item(_as_text(data["content"]), data.get("id")), aggregator)
            for call in data.get("tool_calls") or []:
                yield _done(
                    function_call_item(
                        call.get("id") or data.get("id"), call["id"], call["name"], json.dumps(call["args"])
                    ),
                    aggregator,
                )
        elif role == "tool":
            yield _done(function_call_output_item(data["tool_call_id"], _as_text(data["content"])), aggregator)


def response_from_events(events: Iterable[Any]) -> dict[str, Any]:
    """The response a stream of events adds up to: its finished items, in order (MLflow's
    ``responses_agent_output_reducer``, which traces use to record a streamed answer)."""
    items = []
    for event in events:
        kind = event.get("type") if isinstance(event, dict) else getattr(event, "type", None)
        if kind == "response.output_item.done":
            items.append(event.get("item") if isinstance(event, dict) else event.item)
    return ResponsesAgentResponse(output=items).model_dump(exclude_none=True)
