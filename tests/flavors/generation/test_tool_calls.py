"""Tool calls in the model's own syntax: format detection, prompts for templates without tools, the
streaming parser (OpenAI's order: id and name, then argument pieces) and grammars that force a call."""

import json
import random

import pytest

from servelm.flavors.generation.tool_calls import (
    TOOL_FORMAT_BY_NAME,
    ToolCallParser,
    parse_tool_calls,
    prompt_messages,
    template_takes_tools,
    tool_format,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def streamed(fmt, text, seed):
    """Feed ``text`` in random pieces; (content, {index: (name, arguments)}) as the events say."""
    parser, rng, position = ToolCallParser(TOOL_FORMAT_BY_NAME[fmt]), random.Random(seed), 0
    content, calls = "", {}
    events = []
    while position < len(text):
        size = rng.randint(1, 6)
        events += parser.feed(text[position : position + size])
        position += size
    events += parser.finish()
    for event in events:
        content += event.content
        if event.call is not None:
            name, arguments = calls.get(event.call.index, (None, ""))
            calls[event.call.index] = (event.name or name, arguments + event.arguments)
    return content, calls


@pytest.mark.parametrize(
    "fmt, text, content, expected",
    [
        (
            "hermes",
            (
                "Checking.\n<tool_call>\n"
                '{"name": "get_weather", "arguments": {"city": "Paris", "tags": ["a}", {"b": "]"}]}}\n</tool_call>'
            ),
            "Checking.",
            [("get_weather", '{"city": "Paris", "tags": ["a}", {"b": "]"}]}')],
        ),
        (
            "hermes",
            (
                '<tool_call>\n{"arguments": {"x": 1}, "name": "f"}\n</tool_call>\n'
                '<tool_call>\n{"name": "g", "arguments": "{\\"y\\": 2}"}\n</tool_call>'
            ),
            "",
            [("f", '{"x": 1}'), ("g", '{"y": 2}')],
        ),
        ("hermes", "No call: 3 < 4, and <tool is just text", "No call: 3 < 4, and <tool is just text", []),
        (
            "hermes",
            '<tool_call>\n{"name": "f", "arguments": {"x": ',
            "",
            [("f", '{"x":')],
        ),  # cut short: a call with what came
        ("hermes", "<tool_call>\nnot json at all", "<tool_call>\nnot json at all", []),
        ("llama3_json", '{"name": "f", "parameters": {"q": "a;b"}}', "", [("f", '{"q": "a;b"}')]),
        ("llama3_json", '{"answer": 42}', '{"answer": 42}', []),
        (
            "mistral",
            '[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]',
            "",
            [("f", '{"a": 1}'), ("g", "{}")],
        ),
    ],
)
def test_streamed_pieces_join_into_the_whole_parse(fmt, text, content, expected):
    whole_content, calls = parse_tool_calls(text, TOOL_FORMAT_BY_NAME[fmt])
    assert whole_content.strip() == content.strip() and [(c.name, c.arguments) for c in calls] == expected
    for seed in range(5):
        got_content, got_calls = streamed(fmt, text, seed)
        assert got_content.strip() == content.strip()
        assert [got_calls[i] for i in sorted(got_calls)] == expected
    for call in calls:
        if call.done:
            json.loads(call.arguments)
    assert all(c.id.startswith("call_") and len(c.id) == 29 for c in calls)


def test_the_name_comes_before_any_argument_piece():
    parser = ToolCallParser(TOOL_FORMAT_BY_NAME["hermes"])
    events = [
        e
        for piece in ['<tool_call>\n{"name": "f", "argu', 'ments": {"a', '": 1}}\n</tool_call>']
        for e in parser.feed(piece)
    ]
    assert events[0].name == "f" and events[0].arguments == ""
    assert "".join(e.arguments for e in events) == '{"a": 1}'


def test_format_from_the_chat_template_or_its_name():
    assert tool_format(None, "{% if tools %}<tool_call>{% endif %}").name == "hermes"
    assert tool_format(None, "[TOOL_CALLS] {{ tools }}").name == "mistral"
    assert tool_format(None, "<|python_tag|>{{ tools }}").name == "llama3_json"
    assert tool_format(None, "{{ messages }}").name == "hermes"
    assert tool_format("mistral", "<tool_call>").name == "mistral"
    with pytest.raises(ValueError, match="hermes, llama3_json, mistral"):
        tool_format("nope")
    assert template_takes_tools("{% for tool in tools %}") and not template_takes_tools("{{ messages }}")


def test_templates_without_tools_get_them_written_in():
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "Sunny", "tool_call_id": "call_1"},
        {"role": "tool", "content": "25 C", "tool_call_id": "call_2"},
    ]
    written, tools = prompt_messages(messages, [WEATHER], TOOL_FORMAT_BY_NAME["hermes"], template_tools=False)
    assert (
        tools is None
        and written[0]["role"] == "system"
        and "get_weather" in written[0]["content"]
        and "<tool_call>" in written[0]["content"]
    )
    assert written[2] == {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    }
    assert written[3]["role"] == "user" and written[3]["content"].count("<tool_response>") == 2 and len(written) == 4
    kept, tools = prompt_messages(messages, [WEATHER], TOOL_FORMAT_BY_NAME["hermes"], template_tools=True)
    assert kept is messages and tools == [WEATHER]


@pytest.mark.parametrize("fmt", ["hermes", "llama3_json", "mistral"])
def test_a_forced_call_is_always_valid_even_from_random_weights(fmt, tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from servelm.flavors.engine import SamplingParams
    from servelm.flavors.engine.hf_batcher import ContinuousBatcher
    from servelm.flavors.engine.sample.params import GuidedDecoding
    from servelm.flavors.engine.structured import check_grammar

    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(tiny_llama).eval(),
        AutoTokenizer.from_pretrained(tiny_llama),
    )
    noop = {
        "type": "function",
        "function": {"name": "noop", "parameters": {"type": "object", "properties": {}, "additionalProperties": False}},
    }
    grammar = GuidedDecoding("lark", TOOL_FORMAT_BY_NAME[fmt].grammar([WEATHER, noop], parallel=False))
    assert check_grammar(grammar) is None
    batcher = ContinuousBatcher(model, tokenizer, max_num_seqs=4)
    seqs = [
        batcher.add(
            tokenizer("hello")["input_ids"], SamplingParams(max_tokens=150, temperature=t, seed=s, guided=grammar)
        )
        for t, s in ((0.0, None), (1.0, 1), (1.0, 2))
    ]
    while batcher.has_work():
        batcher.step()
    for seq in seqs:
        text = tokenizer.decode(seq.generated, skip_special_tokens=True)
        content, calls = parse_tool_calls(text, TOOL_FORMAT_BY_NAME[fmt])
        assert seq.finish_reason == "stop" and len(calls) == 1 and content == "", text
        arguments = json.loads(calls[0].arguments)
        assert calls[0].name in ("get_weather", "noop") and (
            calls[0].name == "noop" or isinstance(arguments["city"], str)
        )
