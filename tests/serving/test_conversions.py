"""Conversions between the three agent protocols (chat completions, ChatAgent messages, Responses items):
pure functions, so every agent can answer every endpoint."""

import json

from servelm.agents import ChatAgentMessage, ChatAgentResponse, ChatMessage, ResponsesAgentRequest, ToolCall
from servelm.agents.chat_types import ToolDefinition
from servelm.serving.conversions import (
    agent_messages_to_output_items,
    agent_response_to_chat,
    agent_response_to_chat_message,
    chat_message_to_output_items,
    chat_to_agent_messages,
    chat_to_responses_input,
    chat_tools_to_responses,
    responses_output_to_chat_message,
    responses_to_agent_messages,
    responses_to_chat_messages,
)


def call(call_id="call_1", name="get_weather", arguments='{"city": "Paris"}'):
    return ToolCall(id=call_id, function={"name": name, "arguments": arguments})


# ------------------------------------------------------------------ chat completions -> agent messages
def test_chat_messages_become_agent_messages_with_text_content():
    messages = [
        ChatMessage(role="system", content="be brief"),
        ChatMessage(
            role="user",
            content=[
                {"type": "text", "text": "hello "},
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": "there"},
            ],
            name="ann",
        ),
        ChatMessage(role="assistant", tool_calls=[call()]),
        ChatMessage(role="tool", content="sunny", tool_call_id="call_1"),
        ChatMessage(role="assistant"),
    ]
    out = chat_to_agent_messages(messages)
    assert [m.role for m in out] == ["system", "user", "assistant", "tool", "assistant"]
    assert out[1].content == "hello there" and out[1].name == "ann"  # content parts joined to text
    assert out[2].content is None and out[2].tool_calls[0].function.name == "get_weather"
    assert out[3].content == "sunny" and out[3].tool_call_id == "call_1"
    assert out[4].content == ""  # neither content nor tool calls: empty text


def test_agent_answer_collapses_into_one_chat_message():
    response = ChatAgentResponse(
        messages=[
            ChatAgentMessage(role="assistant", content="first"),
            ChatAgentMessage(role="assistant", tool_calls=[call("c1"), call("c2", "lookup", "{}")]),
            ChatAgentMessage(role="tool", content="done", tool_call_id="c1"),
            ChatAgentMessage(role="assistant", content="second"),
        ]
    )
    message, finish = agent_response_to_chat_message(response)
    assert message.role == "assistant" and message.content == "first\n\nsecond"
    assert [c.id for c in message.tool_calls] == ["c2"]  # c1 was answered by the agent's own tool message
    assert finish == "tool_calls"


def test_agent_answer_without_open_calls_keeps_its_finish_reason():
    message, finish = agent_response_to_chat_message(
        ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="hi")])
    )
    assert (message.content, message.tool_calls, finish) == ("hi", None, "stop")
    _, finish = agent_response_to_chat_message(
        ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="hi")], finish_reason="length")
    )
    assert finish == "length"
    message, finish = agent_response_to_chat_message(
        ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", tool_calls=[call()])])
    )
    assert message.content is None and finish == "tool_calls"


def test_agent_answer_as_a_chat_completion():
    response = ChatAgentResponse(
        messages=[ChatAgentMessage(role="assistant", content="hi")],
        custom_outputs={"k": 1},
        usage={"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    )
    chat = agent_response_to_chat(response, "m")
    assert chat.model == "m" and chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    assert chat.choices[0].message.content == "hi" and chat.choices[0].finish_reason == "stop"
    assert chat.usage.total_tokens == 3 and chat.custom_outputs == {"k": 1}


# ------------------------------------------------------------------ chat completions <-> responses items
def test_chat_messages_become_responses_input_items():
    items = chat_to_responses_input(
        [
            ChatMessage(role="user", content=[{"type": "text", "text": "weather?"}]),
            ChatMessage(role="assistant", content="let me see", tool_calls=[call()]),
            ChatMessage(role="assistant", tool_calls=[call("call_2", "lookup", "{}")]),
            ChatMessage(role="tool", content="sunny", tool_call_id="call_1"),
        ]
    )
    assert [i["type"] for i in items] == [
        "message",
        "message",
        "function_call",
        "function_call",
        "function_call_output",
    ]
    assert items[0] == {"type": "message", "role": "user", "content": "weather?"}
    assert items[1] == {"type": "message", "role": "assistant", "content": "let me see"}
    assert {k: items[2][k] for k in ("call_id", "name", "arguments")} == {
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert items[2]["id"].startswith("fc") and items[3]["call_id"] == "call_2"
    assert items[4] == {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}


def test_chat_tools_in_the_flat_responses_form():
    assert chat_tools_to_responses(None) is None and chat_tools_to_responses([]) is None
    tool = ToolDefinition(function={"name": "get_weather", "description": "now", "parameters": {"type": "object"}})
    assert chat_tools_to_responses([tool]) == [
        {"type": "function", "name": "get_weather", "description": "now", "parameters": {"type": "object"}}
    ]


def test_responses_output_becomes_one_chat_message():
    output = [
        {"type": "reasoning", "id": "r1", "summary": []},
        {
            "type": "message",
            "content": [{"type": "output_text", "text": "a"}, {"type": "refusal", "refusal": "no"}, {"text": "b"}],
        },
        {"type": "message", "content": "c"},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "id": "fc_2", "name": "g"},
    ]
    message, finish = responses_output_to_chat_message(output)
    assert message.content == "abc" and finish == "tool_calls"
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_1", "f", "{}"),
        ("fc_2", "g", ""),
    ]


def test_responses_output_of_only_calls_or_nothing():
    message, finish = responses_output_to_chat_message([{"type": "function_call", "name": "f"}])
    assert message.content is None and message.tool_calls[0].id.startswith("call") and finish == "tool_calls"
    message, finish = responses_output_to_chat_message([])
    assert (message.content, message.tool_calls, finish) == ("", None, "stop")


# ------------------------------------------------------------------ responses request -> agent / chat messages
def test_responses_request_becomes_agent_messages():
    request = ResponsesAgentRequest.model_validate(
        {
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "call_2", "output": {"temp": 20}},
                {"type": "reasoning", "id": "r1", "summary": []},
                {"type": "message", "content": "and tomorrow?"},
            ],
        }
    )
    out = responses_to_agent_messages(request)
    assert [m.role for m in out] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert out[0].content == "be brief" and out[1].content == "weather?" and out[5].content == "and tomorrow?"
    assert out[2].tool_calls[0].id == "call_1" and out[2].tool_calls[0].function.name == "get_weather"
    assert (out[3].tool_call_id, out[3].content) == ("call_1", "sunny")
    assert json.loads(out[4].content) == {"temp": 20}  # non-text output as JSON text


def test_responses_request_becomes_chat_messages():
    request = ResponsesAgentRequest.model_validate(
        {
            "input": [
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
            ],
            "instructions": "sys",
        }
    )
    messages = responses_to_chat_messages(request)
    assert all(isinstance(m, ChatMessage) for m in messages)
    assert [(m.role, m.content, m.tool_call_id) for m in messages] == [
        ("system", "sys", None),
        ("assistant", None, None),
        ("tool", "ok", "call_1"),
    ]
    assert messages[1].tool_calls[0].function.name == "f"


def test_agent_messages_become_output_items():
    items = agent_messages_to_output_items(
        [
            ChatAgentMessage(role="assistant", content="calling", id="msg-1", tool_calls=[call()]),
            ChatAgentMessage(role="tool", content="sunny", tool_call_id="call_1"),
            ChatAgentMessage(role="assistant", content="it is sunny"),
        ]
    )
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output", "message"]
    assert items[0]["id"] == "msg-1" and items[0]["content"][0]["text"] == "calling"
    assert (items[1]["call_id"], items[1]["name"], items[1]["arguments"]) == (
        "call_1",
        "get_weather",
        '{"city": "Paris"}',
    )
    assert items[2] == {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
    assert items[3]["id"].startswith("msg") and items[3]["content"][0]["text"] == "it is sunny"


def test_one_chat_message_as_output_items():
    assert chat_message_to_output_items(ChatMessage(role="assistant")) == []
    text = chat_message_to_output_items(ChatMessage(role="assistant", content=[{"type": "text", "text": "hi"}]))
    assert len(text) == 1 and text[0]["role"] == "assistant" and text[0]["content"][0]["text"] == "hi"
    calls = chat_message_to_output_items(ChatMessage(role="assistant", tool_calls=[call()]))
    assert [i["type"] for i in calls] == ["function_call"] and calls[0]["call_id"] == "call_1"
