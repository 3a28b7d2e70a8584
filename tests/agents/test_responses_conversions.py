"""Responses items <-> Chat Completions messages, and a chat LLM's stream as Responses events: what MLflow's
ResponsesAgent helpers (``prep_msgs_for_cc_llm``, ``output_to_responses_items_stream``) give."""

from servelm.agents import ResponsesAgent
from servelm.agents.responses_types import ResponsesAgentRequest


def chunk(**delta):
    return {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": delta}]}


def test_a_chat_stream_becomes_text_deltas_then_finished_items():
    chunks = [
        chunk(role="assistant", content="Hel"),
        chunk(content="lo"),
        chunk(tool_calls=[{"index": 0, "id": "call_1", "function": {"name": "add", "arguments": '{"a"'}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": ": 1}"}}]),
        {"id": "chatcmpl-1", "choices": []},  # a usage chunk: no choices
    ]
    items: list[dict] = []
    events = list(ResponsesAgent.output_to_responses_items_stream(iter(chunks), items))
    assert [e.type for e in events] == [
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_item.done",
        "response.output_item.done",
    ]
    assert [e.delta for e in events[:2]] == ["Hel", "lo"] and events[0].item_id == "chatcmpl-1"
    text, call = items
    assert text["type"] == "message" and text["content"][0]["text"] == "Hello"
    assert call == {
        "type": "function_call",
        "id": "chatcmpl-1",
        "call_id": "call_1",
        "name": "add",
        "arguments": '{"a": 1}',
        "status": "completed",
    }
    reduced = ResponsesAgent.responses_agent_output_reducer(events)
    assert [o["type"] for o in reduced["output"]] == ["message", "function_call"]
    assert list(ResponsesAgent.output_to_responses_items_stream(iter([]))) == []


def test_reasoning_parts_become_a_reasoning_item():
    reasoning = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "think"}]}
    chunks = [chunk(content=[reasoning]), chunk(content="answer")]
    events = list(ResponsesAgent.output_to_responses_items_stream(iter(chunks)))
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert done[0]["type"] == "reasoning" and done[0]["summary"][0]["text"] == "think"
    assert done[1]["content"][0]["text"] == "answer"


def test_langchain_messages_become_finished_items():
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    messages = [
        HumanMessage(content="add 1"),
        AIMessage(content="", id="ai-1", tool_calls=[{"id": "call_1", "name": "add", "args": {"a": 1}}]),
        ToolMessage(content="2", tool_call_id="call_1"),
        AIMessage(content="it is 2", id="ai-2"),
    ]
    events = list(ResponsesAgent.output_to_responses_items_stream(iter(messages)))
    assert [e.item["type"] for e in events] == ["function_call", "function_call_output", "message"]
    assert events[0].item["arguments"] == '{"a": 1}' and events[1].item["output"] == "2"


def test_input_items_become_chat_messages():
    request = ResponsesAgentRequest.model_validate(
        {
            "input": [
                {"role": "user", "content": "add 1"},
                {"type": "function_call", "id": "fc", "call_id": "call_1", "name": "add", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "2"},
                ResponsesAgent.create_text_output_item("it is 2", "msg_1"),
            ]
        }
    )
    assert ResponsesAgent.prep_msgs_for_cc_llm(request.input) == [
        {"role": "user", "content": "add 1"},
        {
            "role": "assistant",
            "content": "tool call",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"arguments": "{}", "name": "add"}}],
        },
        {"role": "tool", "content": "2", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "it is 2"},
    ]
    assert ResponsesAgent._responses_to_cc({"type": "function_call_output", "call_id": "c", "output": {"x": 1}}) == [
        {"role": "tool", "content": '{"x": 1}', "tool_call_id": "c"}
    ]
    assert ResponsesAgent.create_annotation_added("m", {"type": "url_citation"})["annotation_index"] == 0
