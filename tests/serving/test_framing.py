"""Chat and text-completion chunks exactly as OpenAI sends them: one id and ``created`` per response, the
role with each choice's first content, a finish_reason per choice, usage only when asked for."""

import json

import pytest

from servelm.agents import ChatChoiceDelta, ChatChunkChoice, ChatCompletionChunk
from servelm.agents.chat_types import ChatChoiceLogProbs, ToolCallDelta, ToolCallFunctionDelta
from servelm.serving.framing import ChatChunkFramer, CompletionChunkFramer, dumps, openai_chat_chunks


async def normalized(chunks, include_usage=False, model="m"):
    async def source():
        for chunk in chunks:
            yield chunk

    return [c async for c in openai_chat_chunks(source(), model, include_usage)]


def text(content=None, index=0, finish=None, role=None, **extra):
    return ChatCompletionChunk(
        choices=[ChatChunkChoice(index=index, delta=ChatChoiceDelta(role=role, content=content), finish_reason=finish)],
        **extra,
    )


@pytest.fixture(scope="module")
def openai_chunk():
    """The openai client's chunk type, validating strictly."""
    return pytest.importorskip("openai.types.chat").ChatCompletionChunk.model_validate


def test_dumps_is_compact():
    assert dumps({"a": [1, "x"], "b": None}) == '{"a":[1,"x"],"b":null}'


async def test_one_envelope_role_first_and_a_finish(openai_chunk):
    out = await normalized([text("a ", id="other-1"), text("b", id="other-2")], model="echo")
    assert (
        len({c["id"] for c in out}) == 1
        and out[0]["id"].startswith("chatcmpl-")
        and len({c["created"] for c in out}) == 1
    )
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "echo" for c in out)
    assert [c["choices"][0]["delta"] for c in out] == [{"role": "assistant", "content": "a "}, {"content": "b"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in out] == [None, None, "stop"]
    for chunk in out:
        openai_chunk(chunk)


async def test_empty_deltas_are_dropped_and_the_role_waits_for_content():
    out = await normalized([text("", role="assistant"), text(None), text("hi"), text(None, finish="length")])
    assert [c["choices"][0]["delta"] for c in out] == [{"role": "assistant", "content": "hi"}, {}]
    assert out[-1]["choices"][0]["finish_reason"] == "length"


async def test_nothing_to_say_is_still_one_choice_that_stops():
    out = await normalized([])
    assert [c["choices"] for c in out] == [
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": "stop"}]
    ]


async def test_chunks_after_a_choice_finished_are_ignored():
    out = await normalized([text("a", finish="stop"), text("late")])
    assert len(out) == 1 and out[0]["choices"][0]["delta"] == {"role": "assistant", "content": "a"}


async def test_tool_calls_finish_as_tool_calls(openai_chunk):
    call = ToolCallDelta(index=0, id="call_1", type="function", function=ToolCallFunctionDelta(name="f", arguments=""))
    args = ToolCallDelta(index=0, function=ToolCallFunctionDelta(arguments="{}"))
    out = await normalized(
        [
            ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(tool_calls=[call]))]),
            ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(tool_calls=[args]))]),
        ]
    )
    assert (
        out[0]["choices"][0]["delta"]["role"] == "assistant"
        and out[0]["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_1"
    )
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    for chunk in out:
        openai_chunk(chunk)


async def test_every_choice_gets_its_role_and_finish():
    out = await normalized([text("a", index=0), text("b", index=1), text("c", index=1, finish="length")])
    by_index = {i: [c["choices"][0] for c in out if c["choices"] and c["choices"][0]["index"] == i] for i in (0, 1)}
    assert by_index[0][0]["delta"]["role"] == "assistant" and by_index[1][0]["delta"]["role"] == "assistant"
    assert by_index[0][-1]["finish_reason"] == "stop" and by_index[1][-1]["finish_reason"] == "length"
    assert [c["finish_reason"] for c in by_index[1]] == [None, "length"]


async def test_usage_only_when_asked_the_last_one_seen():
    chunks = [
        text("a", usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
        text(None, finish="stop", usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
    ]
    assert all("usage" not in c for c in await normalized(chunks))
    out = await normalized(chunks, include_usage=True)
    assert out[-1]["choices"] == [] and out[-1]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
    }
    zero = await normalized([text("a")], include_usage=True)
    assert zero[-1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


async def test_custom_outputs_and_logprobs_pass_through():
    logprobs = ChatChoiceLogProbs(content=[{"token": "a", "logprob": -0.5, "top_logprobs": []}])
    out = await normalized(
        [
            ChatCompletionChunk(choices=[], custom_outputs={"trace": 1}),
            ChatCompletionChunk(
                choices=[ChatChunkChoice(delta=ChatChoiceDelta(content="a"), logprobs=logprobs)],
                custom_outputs={"trace": 2},
            ),
            ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta())], custom_outputs={"trace": 3}),
        ]
    )
    assert [(c["choices"], c["custom_outputs"]) for c in out[:1]] == [([], {"trace": 1})]
    assert out[1]["custom_outputs"] == {"trace": 2} and out[1]["choices"][0]["logprobs"]["content"][0]["token"] == "a"
    assert out[2]["choices"] == [] and out[2]["custom_outputs"] == {"trace": 3}  # no payload: only the custom outputs
    assert out[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_chunk_framer(openai_chunk):
    framer = ChatChunkFramer('say "hi"')
    first, second = (
        json.loads(framer.choice(0, {"content": "a"})),
        json.loads(framer.choice(0, {"content": "b"}, "length")),
    )
    other = json.loads(framer.choice(1, {}))
    calls = json.loads(
        framer.choice(
            2, {"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}]}
        )
    )
    usage = json.loads(framer.usage(4, 3))
    assert first["model"] == 'say "hi"' and first["id"].startswith("chatcmpl-")
    assert (
        len({c["id"] for c in (first, second, other, calls, usage)}) == 1
        and len({c["created"] for c in (first, usage)}) == 1
    )
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": "a"}, "logprobs": None, "finish_reason": None}
    ]
    assert second["choices"][0]["delta"] == {"content": "b"} and second["choices"][0]["finish_reason"] == "length"
    assert other["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # a first chunk always has content
    assert "content" not in calls["choices"][0]["delta"] and calls["choices"][0]["delta"]["role"] == "assistant"
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    for chunk in (first, second, other, calls, usage):
        openai_chunk(chunk)


def test_completion_chunk_framer():
    pytest.importorskip("openai")
    from openai.types import Completion

    framer = CompletionChunkFramer("m")
    piece, last, usage = (
        json.loads(framer.choice(0, "he")),
        json.loads(framer.choice(0, "llo", "stop")),
        json.loads(framer.usage(2, 2)),
    )
    assert piece["object"] == "text_completion" and piece["id"].startswith("cmpl") and piece["id"] == usage["id"]
    assert piece["choices"] == [{"index": 0, "text": "he", "logprobs": None, "finish_reason": None}]
    assert (
        last["choices"][0]["finish_reason"] == "stop" and usage["usage"]["total_tokens"] == 4 and usage["choices"] == []
    )
    assert Completion.model_validate(last).choices[0].text == "llo"
