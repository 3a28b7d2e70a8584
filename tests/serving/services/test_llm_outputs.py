"""Chat chunk pieces built from the tool-call parser's events."""

from servelm.flavors.generation.tool_calls import ParsedCall, ToolEvent
from servelm.serving.services.llm_outputs import tool_call_deltas


def test_a_piece_that_starts_a_call_and_its_arguments_gives_one_entry():
    first, second = ParsedCall(0), ParsedCall(1)
    events = [
        ToolEvent(call=first, name="get_weather"),
        ToolEvent(call=first, arguments='{"'),
        ToolEvent(call=first, arguments='city":'),
        ToolEvent(call=second, name="get_time"),
        ToolEvent(content="text is not a call"),
        ToolEvent(call=second, arguments="{}"),
    ]
    entries = tool_call_deltas(events)
    assert entries == [
        {"index": 0, "id": first.id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":'}},
        {"index": 1, "id": second.id, "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert tool_call_deltas(events, first_only=True) == entries[:1]


def test_argument_pieces_of_a_started_call_join():
    call = ParsedCall(0)
    events = [ToolEvent(call=call, arguments='"Par'), ToolEvent(call=call, arguments='is"}')]
    assert tool_call_deltas(events) == [{"index": 0, "function": {"arguments": '"Paris"}'}}]
