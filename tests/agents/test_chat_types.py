"""OpenAI chat-completions types: the wire body with its extras, ids, validation messages."""

import pytest
from pydantic import ValidationError

from servelm.agents import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChatParams


def test_chat_request_accepts_openai_body_and_extras():
    req = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stop": "\n",
            "max_completion_tokens": 5,
            "stream_options": {"include_usage": True},
            "logprobs": False,
            "response_format": {"type": "text"},
        }
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


def test_param_ranges_are_checked():
    with pytest.raises(ValidationError, match="temperature"):
        ChatParams(temperature=5)
