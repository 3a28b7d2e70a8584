"""/v1/chat/completions through the real openai client against a real server on loopback: every agent
kind answers, streamed like OpenAI, tool calls preserved."""

import json

import pytest
from openai import AsyncOpenAI

from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse, ToolCall
from servelm.flavors.pyfunc import save_model


@pytest.fixture(scope="module")
def chat_agent_server(tmp_path_factory, serve, write_code, chat_agent_source):
    tmp = tmp_path_factory.mktemp("chat")
    save_model(str(tmp / "echo"), python_model=write_code(tmp, "agent.py", chat_agent_source))
    with serve(str(tmp / "echo")) as (base, app):
        yield base


def test_non_streamed(chat_agent_server, openai_client):
    reply = openai_client(chat_agent_server).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hello world"}]
    )
    assert reply.choices[0].message.content == "hello world"
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason == "stop"
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion" and reply.model == "echo"


def test_streamed_like_openai(chat_agent_server, openai_client):
    chunks = list(
        openai_client(chat_agent_server).chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "a b c"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == "a "
    assert all(c.choices[0].delta.role is None for c in chunks[1:-1] if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a b c "
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_raw_stream_ends_with_done_and_no_usage_unless_asked(chat_agent_server, sse_lines):
    lines = sse_lines(
        chat_agent_server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x y"}], "stream": True}
    )
    assert lines[-1] == "data: [DONE]"
    payloads = [json.loads(line[len("data: ") :]) for line in lines[:-1] if line.startswith("data: ")]
    assert all(p["choices"] for p in payloads) and "usage" not in payloads[-1]


async def test_async_client(chat_agent_server):
    aclient = AsyncOpenAI(base_url=f"{chat_agent_server}/v1", api_key="x", max_retries=0)
    reply = await aclient.chat.completions.create(model="echo", messages=[{"role": "user", "content": "async hi"}])
    assert reply.choices[0].message.content == "async hi"
    stream = await aclient.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "p q"}], stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "p q "
    await aclient.close()


class ToolAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        call = ToolCall(id="call_1", function={"name": "get_weather", "arguments": '{"city": "Paris"}'})
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", tool_calls=[call], id="m1")])

    def predict_stream(self, messages, context=None, custom_inputs=None):
        call = ToolCall(id="call_1", function={"name": "get_weather", "arguments": '{"city": "Paris"}'})
        yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", tool_calls=[call], id="m1"))


def test_tool_calls_preserved(serve, openai_client):
    with serve(ToolAgent()) as (base, _):
        c = openai_client(base)
        reply = c.chat.completions.create(model="ToolAgent", messages=[{"role": "user", "content": "weather?"}])
        call = reply.choices[0].message.tool_calls[0]
        assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_weather", '{"city": "Paris"}')
        assert reply.choices[0].finish_reason == "tool_calls"
        chunks = list(
            c.chat.completions.create(
                model="ToolAgent", messages=[{"role": "user", "content": "weather?"}], stream=True
            )
        )
        head = chunks[0].choices[0].delta.tool_calls[0]
        assert (head.index, head.id, head.function.name) == (0, "call_1", "get_weather")
        args = "".join(
            c.choices[0].delta.tool_calls[0].function.arguments or ""
            for c in chunks
            if c.choices and c.choices[0].delta.tool_calls
        )
        assert args == '{"city": "Paris"}' and chunks[-1].choices[0].finish_reason == "tool_calls"


def test_chat_model_and_responses_agent_answer_chat(
    tmp_path, chat_model_code, responses_agent_code, serve, openai_client
):
    for name, code in (("cm", chat_model_code), ("ra", responses_agent_code)):
        save_model(str(tmp_path / name), python_model=code)
        with serve(str(tmp_path / name)) as (base, _):
            c = openai_client(base)
            assert (
                c.chat.completions.create(model=name, messages=[{"role": "user", "content": "one two"}])
                .choices[0]
                .message.content
                == "one two"
            )
            streamed = "".join(
                ch.choices[0].delta.content or ""
                for ch in c.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": "one two"}], stream=True
                )
                if ch.choices
            )
            assert streamed == "one two "


def test_sse_events_are_separated_by_blank_lines_without_cr(chat_agent_server):
    import httpx

    body = {"messages": [{"role": "user", "content": "a b c"}], "stream": True}
    with httpx.stream("POST", f"{chat_agent_server}/v1/chat/completions", json=body, timeout=120) as resp:
        raw = b"".join(resp.iter_bytes())
    assert b"\r" not in raw and raw.endswith(b"data: [DONE]\n\n")
    assert all(event.startswith(b"data: ") for event in raw.split(b"\n\n") if event)
