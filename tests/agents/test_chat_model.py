"""``ChatModel``: every call form (request dict, context + messages + params, no context)."""

from servelm.agents import ChatChoice, ChatCompletionResponse, ChatMessage, ChatModel, ChatParams


class EchoModel(ChatModel):
    def predict(self, context, messages, params):
        assert isinstance(params, ChatParams)
        return ChatCompletionResponse(
            choices=[
                ChatChoice(message=ChatMessage(role="assistant", content=f"{messages[-1].text()}:{params.temperature}"))
            ]
        )


class EchoModelNoContext(ChatModel):
    def predict(self, messages, params):
        return ChatCompletionResponse(
            choices=[ChatChoice(message=ChatMessage(role="assistant", content=messages[-1].text()))]
        )


def test_chat_model_call_forms():
    model = EchoModel()
    req = {"messages": [{"role": "user", "content": "q"}], "temperature": 0.5}
    assert model.predict(req).choices[0].message.content == "q:0.5"
    assert (
        model.predict(None, [{"role": "user", "content": "q"}], {"temperature": 0.1}).choices[0].message.content
        == "q:0.1"
    )
    # params the request leaves out hold MLflow's ChatParams defaults (temperature 1.0, n 1, stream False)
    assert model.predict([ChatMessage(role="user", content="q")], ChatParams()).choices[0].message.content == "q:1.0"
    assert (
        EchoModelNoContext().predict(None, [{"role": "user", "content": "z"}], ChatParams()).choices[0].message.content
        == "z"
    )
