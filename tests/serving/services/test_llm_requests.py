"""Chat requests checked before generating: parameters no model can honour refused by name, tool choices,
logit bias, and the grammar a response_format or a forced tool call implies."""

import json

import pytest

from servelm.agents import ChatCompletionRequest
from servelm.flavors.generation.tool_calls import TOOL_FORMAT_BY_NAME
from servelm.serving.errors import APIError
from servelm.serving.services.llm_requests import guided_decoding, logit_bias, refuse_unsupported, tool_plan

HERMES = TOOL_FORMAT_BY_NAME["hermes"]
TOOL = {
    "type": "function",
    "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}},
}


def chat(**fields):
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


@pytest.mark.parametrize(
    "field, value",
    [
        ("audio", {"voice": "x", "format": "mp3"}),
        ("prediction", {"type": "content", "content": "x"}),
        ("web_search_options", {}),
        ("reasoning_effort", "high"),
        ("modalities", ["text", "audio"]),
        ("store", True),
        ("top_logprobs", 2),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(field, value):
    if value == {}:
        value = {"search_context_size": "low"}
    with pytest.raises(APIError) as caught:
        refuse_unsupported(chat(**{field: value}))
    assert caught.value.status == 400 and caught.value.param == field
    refuse_unsupported(chat(modalities=["text"], store=False, logprobs=True, top_logprobs=2, unknown_field=1))


def test_tool_choices():
    assert tool_plan(chat()).offered is None
    assert tool_plan(chat(tools=[TOOL])).forced is None and tool_plan(chat(tools=[TOOL])).offered
    assert tool_plan(chat(tools=[TOOL], tool_choice="none")).offered is None
    assert tool_plan(chat(tools=[TOOL], tool_choice="required")).forced == "*"
    assert tool_plan(chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}})).forced == "f"
    assert tool_plan(chat(tools=[TOOL], parallel_tool_calls=False)).parallel is False
    for bad in ({"type": "function", "function": {"name": "g"}}, "sometimes", {"type": "function"}):
        with pytest.raises(APIError) as caught:
            tool_plan(chat(tools=[TOOL], tool_choice=bad))
        assert caught.value.param == "tool_choice"
    with pytest.raises(APIError):
        tool_plan(chat(tool_choice="required"))


def test_grammars_from_response_format_and_tool_choice():
    schema = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}
    as_schema = chat(
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}}
    )
    assert guided_decoding(as_schema, tool_plan(as_schema), HERMES).kind == "json_schema"
    assert json.loads(guided_decoding(as_schema, tool_plan(as_schema), HERMES).value) == schema
    as_object = chat(response_format={"type": "json_object"})
    assert guided_decoding(as_object, tool_plan(as_object), HERMES).kind == "json_object"
    assert guided_decoding(chat(response_format={"type": "text"}), tool_plan(chat()), HERMES) is None
    forced = chat(tools=[TOOL], tool_choice="required")
    assert "<tool_call>" in guided_decoding(forced, tool_plan(forced), HERMES).value
    either = chat(tools=[TOOL], response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
    assert "answer" in guided_decoding(either, tool_plan(either), HERMES).value  # a call, or the JSON answer
    assert (
        guided_decoding(chat(tools=[TOOL]), tool_plan(chat(tools=[TOOL])), HERMES) is None
    )  # auto: the model decides freely
    broken = chat(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "nonsense"}}})
    with pytest.raises(APIError) as caught:
        guided_decoding(broken, tool_plan(broken), HERMES)
    assert caught.value.param == "response_format" and caught.value.status == 400


def test_logit_bias_takes_token_ids_and_bounded_values():
    assert logit_bias(chat(logit_bias={"12": -100, "7": 5.5})) == {12: -100.0, 7: 5.5}
    assert logit_bias(chat()) is None
    for bad in ({"x": 1}, {"3": 101}, {"-2": 1}):
        with pytest.raises(APIError) as caught:
            logit_bias(chat(logit_bias=bad))
        assert caught.value.param == "logit_bias"
