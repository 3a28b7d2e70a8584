"""``ResponsesAgent``: dict calls, and item / event helpers the official openai client accepts."""

from servelm.agents import ResponsesAgent, ResponsesAgentResponse, ResponsesAgentStreamEvent


class Resp(ResponsesAgent):
    def predict(self, request):
        return ResponsesAgentResponse(output=[self.create_text_output_item(request.input[-1].text(), "m1")])


def test_responses_agent_accepts_dict():
    assert Resp().predict({"input": [{"role": "user", "content": "hey"}]}).output_text == "hey"
    assert Resp().predict({"input": "hey"}).output_text == "hey"


def test_text_delta_is_wire_valid_for_openai_client():
    from openai.types.responses import ResponseTextDeltaEvent

    event = ResponsesAgentStreamEvent(**ResponsesAgent.create_text_delta("hi", item_id="m1"), sequence_number=3)
    parsed = ResponseTextDeltaEvent.model_validate(event.model_dump(exclude_none=True))
    assert parsed.delta == "hi" and parsed.logprobs == [] and parsed.sequence_number == 3


def test_output_items_are_wire_valid_for_openai_client():
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage

    ResponseOutputMessage.model_validate(ResponsesAgent.create_text_output_item("x", "m1"))
    ResponseFunctionToolCall.model_validate(ResponsesAgent.create_function_call_item("fc1", "call1", "f", "{}"))
