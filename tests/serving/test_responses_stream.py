"""``ResponsesStreamBuilder``: from the few events agents yield (text deltas, items done) to the complete,
wire-valid Responses stream the openai client's helpers need."""

import pytest

from servelm.agents import ResponsesAgent
from servelm.agents.responses_types import ResponsesUsage
from servelm.serving.responses_stream import ResponsesStreamBuilder


def kinds(events):
    return [e["type"] for e in events]


@pytest.fixture(scope="module")
def openai_event():
    """Validate one event with the openai client's own class for its type (strictly, unlike the client)."""
    import typing

    types = pytest.importorskip("openai.types.responses")
    union = typing.get_args(types.ResponseStreamEvent)[0]
    classes = {typing.get_args(c.model_fields["type"].annotation)[0]: c for c in typing.get_args(union)}
    return lambda event: classes[event["type"]].model_validate(event)


def test_a_text_stream_gets_every_event_in_order(openai_event):
    builder = ResponsesStreamBuilder("m")
    events = builder.start()
    events += builder.text_delta("msg-1", "hello ")
    events += builder.text_delta("msg-1", "world")
    events += builder.item_done(ResponsesAgent.create_text_output_item("hello world", "msg-1"))
    events += builder.finish(ResponsesUsage(input_tokens=3, output_tokens=2, total_tokens=5).model_dump())
    assert kinds(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["id"] == builder.response_id
    assert events[2]["item"]["status"] == "in_progress" and events[2]["output_index"] == 0
    assert events[6]["text"] == "hello world" and events[7]["part"]["text"] == "hello world"
    completed = events[-1]["response"]
    assert completed["status"] == "completed" and completed["model"] == "m" and completed["usage"]["total_tokens"] == 5
    assert (
        completed["output"][0]["content"][0]["text"] == "hello world"
        and completed["output"][0]["status"] == "completed"
    )
    for event in events[:-1]:  # (the usage object is the caller's: its fields follow OpenAI's newest types or not)
        assert openai_event(event).type == event["type"]
    assert openai_event(ResponsesStreamBuilder("m").finish()[-1]).response.status == "completed"


def test_finish_closes_items_left_open_with_their_deltas():
    builder = ResponsesStreamBuilder("m")
    builder.start()
    builder.text_delta("a", "one ")
    builder.text_delta("a", "two")
    events = builder.finish()
    assert kinds(events) == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["text"] == "one two"
    item = events[-1]["response"]["output"][0]
    assert item["status"] == "completed" and item["content"] == [
        {"type": "output_text", "text": "one two", "annotations": [], "logprobs": []}
    ]
    assert "usage" not in events[-1]["response"]


def test_the_final_item_text_wins_over_the_deltas():
    builder = ResponsesStreamBuilder("m")
    builder.text_delta("a", "draft")
    events = builder.item_done(
        {"id": "a", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "final"}]}
    )
    assert events[0]["text"] == "final" and events[-1]["item"]["content"][0]["text"] == "final"


def test_a_late_delta_is_dropped():
    builder = ResponsesStreamBuilder("m")
    builder.text_delta("a", "x")
    builder.item_done({"id": "a", "type": "message"})
    assert builder.text_delta("a", "late") == []
    assert builder.items[0]["content"][0]["text"] == "x"


def test_an_item_done_that_was_never_opened_is_added_first():
    builder = ResponsesStreamBuilder("m")
    call = ResponsesAgent.create_function_call_item("fc_1", "call_1", "f", "{}")
    events = builder.item_done(call)
    assert kinds(events) == ["response.output_item.added", "response.output_item.done"]
    assert events[0]["output_index"] == events[1]["output_index"] == 0
    done = builder.item_done({"type": "function_call", "call_id": "call_2", "name": "g", "arguments": ""})
    assert done[0]["item"]["id"] and done[1]["output_index"] == 1 and done[1]["item"]["status"] == "completed"
    assert [i["type"] for i in builder.response("completed")["output"]] == ["function_call", "function_call"]


def test_item_added():
    builder = ResponsesStreamBuilder("m")
    opened = builder.item_added({"type": "message", "id": "msg-1", "role": "assistant", "content": []})
    assert kinds(opened) == [
        "response.output_item.added",
        "response.content_part.added",
    ]  # opened for deltas, no empty delta
    assert builder.item_added({"type": "message", "id": "msg-1"}) == []  # already there
    assert builder.item_added({"type": "message"}) == []  # a message without an id waits for its deltas
    reasoning = builder.item_added(ResponsesAgent.create_reasoning_item("r1", "thinking"))
    assert kinds(reasoning) == ["response.output_item.added"] and reasoning[0]["output_index"] == 1
    assert kinds(builder.text_delta("msg-1", "hi")) == ["response.output_text.delta"]


def test_passthrough_numbers_and_indexes_other_events():
    builder = ResponsesStreamBuilder("m")
    builder.item_added(ResponsesAgent.create_reasoning_item("r1", "t"))
    event = builder.passthrough(
        {"type": "response.reasoning_summary_text.delta", "item_id": "r1", "delta": "x", "sequence_number": 99}
    )
    assert event == [
        {
            "type": "response.reasoning_summary_text.delta",
            "sequence_number": 1,
            "item_id": "r1",
            "delta": "x",
            "output_index": 0,
        }
    ]
    custom = builder.passthrough({"type": "custom.event", "item_id": "unknown"})
    assert custom[0]["sequence_number"] == 2 and "output_index" not in custom[0]


def test_function_calls_stream_their_arguments(openai_event):
    builder = ResponsesStreamBuilder("m")
    events = builder.start() + builder.call_added("fc_1", "call_1", "get_weather")
    events += builder.call_arguments("fc_1", '{"city": ') + builder.call_arguments("fc_1", '"Paris"}')
    events += builder.finish()
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    done = events[-3]
    assert done["arguments"] == '{"city": "Paris"}' and done["name"] == "get_weather"
    item = openai_event(events[-2]).item
    assert item.call_id == "call_1" and item.arguments == '{"city": "Paris"}' and item.status == "completed"
    for event in events:
        openai_event(event)


def test_a_cut_answer_finishes_incomplete(openai_event):
    builder = ResponsesStreamBuilder("m")
    events = builder.start() + builder.text_delta(
        "msg_1", "Hello", [{"token": "Hello", "logprob": -0.5, "bytes": [72], "top_logprobs": []}]
    )
    events += builder.finish(
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "total_tokens": 2,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
        incomplete="max_output_tokens",
    )
    last = openai_event(events[-1])
    assert last.type == "response.incomplete" and last.response.status == "incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output[0].content[0].logprobs[0].logprob == -0.5


def test_response_carries_request_fields_and_custom_outputs():
    builder = ResponsesStreamBuilder("m", {"temperature": 0.5, "instructions": "be brief"})
    assert "custom_outputs" not in builder.response("in_progress")
    builder.custom_outputs = {"trace": "t1"}
    body = builder.response("completed", usage={"total_tokens": 1})
    assert body["temperature"] == 0.5 and body["instructions"] == "be brief"
    assert (
        body["custom_outputs"] == {"trace": "t1"}
        and body["usage"] == {"total_tokens": 1}
        and body["object"] == "response"
    )
