"""OpenAI Responses types as MLflow's ResponsesAgent uses them: string input, output_text."""

from servelm.agents import ResponsesAgent, ResponsesAgentRequest, ResponsesAgentResponse


def test_responses_string_input_and_output_text():
    req = ResponsesAgentRequest.model_validate({"input": "hello"})
    assert req.input[0].role == "user" and req.input[0].text() == "hello"
    resp = ResponsesAgentResponse(
        output=[
            ResponsesAgent.create_text_output_item("hi ", "m1"),
            ResponsesAgent.create_text_output_item("there", "m2"),
        ]
    )
    assert resp.output_text == "hi there"
    assert resp.model_dump()["object"] == "response"
