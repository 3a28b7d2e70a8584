"""MLflow ChatAgent types: message shape rules, named validation errors, ids filled in."""

import pytest
from pydantic import ValidationError

from servelm.agents import ChatAgentMessage, ChatAgentRequest, ChatAgentResponse


def test_tool_message_needs_tool_call_id():
    with pytest.raises(ValidationError, match="tool_call_id"):
        ChatAgentMessage(role="tool", content="42")


def test_chat_agent_message_needs_content_or_tool_calls():
    with pytest.raises(ValidationError, match="'content' or 'tool_calls'"):
        ChatAgentMessage(role="assistant")
    msg = ChatAgentMessage(role="assistant", tool_calls=[{"id": "c1", "function": {"name": "f", "arguments": "{}"}}])
    assert msg.tool_calls[0].type == "function"


def test_unknown_role_is_named():
    with pytest.raises(ValidationError) as info:
        ChatAgentRequest.model_validate({"messages": [{"role": "robot", "content": "x"}]})
    err = info.value.errors()[0]
    assert err["loc"][:3] == ("messages", 0, "role") and "robot" in err["msg"]


def test_chat_agent_response_fills_message_ids():
    resp = ChatAgentResponse(messages=[{"role": "assistant", "content": "x"}])
    assert resp.messages[0].id
