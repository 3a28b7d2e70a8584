"""Protocol types: OpenAI wire compatibility, MLflow field names, validation messages."""

import pytest
from pydantic import ValidationError

from servelm.agents import (
    ChatAgentMessage,
    ChatAgentRequest,
    ChatAgentResponse,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChatParams,
    ResponsesAgent,
    ResponsesAgentRequest,
    ResponsesAgentResponse,
    ResponsesAgentStreamEvent,
)


def test_chat_request_accepts_openai_body_and_extras():
    req = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": "\n", "max_completion_tokens": 5,
         "stream_options": {"include_usage": True}, "logprobs": False, "response_format": {"type": "text"}}
    )
    assert req.stop == ["\n"]
    assert req.token_limit() == 5
    assert req.params().stream_options.include_usage is True
    assert "messages" not in req.params().model_dump()


def test_ids_and_created_are_filled_in():
    resp = ChatCompletionResponse(choices=[{"message": {"role": "assistant", "content": "x"}}])
    assert resp.id.startswith("chatcmpl-") and resp.created > 0 and resp.object == "chat.completion"
    chunk = ChatCompletionChunk()
    assert chunk.object == "chat.completion.chunk" and chunk.id != resp.id


def test_tool_message_needs_tool_call_id():
    with pytest.raises(ValidationError, match="tool_call_id"):
        ChatMessage(role="tool", content="42")
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


def test_param_ranges_are_checked():
    with pytest.raises(ValidationError, match="temperature"):
        ChatParams(temperature=5)


def test_chat_agent_response_fills_message_ids():
    resp = ChatAgentResponse(messages=[{"role": "assistant", "content": "x"}])
    assert resp.messages[0].id


def test_responses_string_input_and_output_text():
    req = ResponsesAgentRequest.model_validate({"input": "hello"})
    assert req.input[0].role == "user" and req.input[0].text() == "hello"
    resp = ResponsesAgentResponse(output=[ResponsesAgent.create_text_output_item("hi ", "m1"), ResponsesAgent.create_text_output_item("there", "m2")])
    assert resp.output_text == "hi there"
    assert resp.model_dump()["object"] == "response"


def test_text_delta_is_wire_valid_for_openai_client():
    from openai.types.responses import ResponseTextDeltaEvent

    event = ResponsesAgentStreamEvent(**ResponsesAgent.create_text_delta("hi", item_id="m1"), sequence_number=3)
    parsed = ResponseTextDeltaEvent.model_validate(event.model_dump(exclude_none=True))
    assert parsed.delta == "hi" and parsed.logprobs == [] and parsed.sequence_number == 3


def test_output_items_are_wire_valid_for_openai_client():
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage

    ResponseOutputMessage.model_validate(ResponsesAgent.create_text_output_item("x", "m1"))
    ResponseFunctionToolCall.model_validate(ResponsesAgent.create_function_call_item("fc1", "call1", "f", "{}"))
