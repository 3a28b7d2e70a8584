"""Chat requests as chat templates take them (plain dicts), shared by every flavor's prompt encoder."""

from __future__ import annotations

from typing import Any, Optional

from servelm.agents import ChatCompletionRequest
from servelm.agents.chat_types import content_text


def template_inputs(request: ChatCompletionRequest) -> tuple[list[dict[str, Any]], Optional[list[dict[str, Any]]]]:
    """(messages, tools) as chat templates take them: plain dicts, text content, tool calls kept."""
    messages = []
    for m in request.messages:
        message: dict[str, Any] = {"role": m.role, "content": content_text(m.content)}
        if m.tool_calls:
            message["tool_calls"] = [c.model_dump() for c in m.tool_calls]
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        if m.name:
            message["name"] = m.name
        messages.append(message)
    tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
    return messages, tools
