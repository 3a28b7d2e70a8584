"""The adapters behind a loaded model's predict: ChatModel and ResponsesAgent take and return plain dicts."""

from servelm.flavors.pyfunc import load_model, save_model


def test_chat_model_and_responses_agent_predict(tmp_path, chat_model_code, responses_agent_code):
    save_model(str(tmp_path / "c"), python_model=chat_model_code)
    out = load_model(str(tmp_path / "c")).predict({"messages": [{"role": "user", "content": "hi"}]})
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["content"] == "hi"
    save_model(str(tmp_path / "r"), python_model=responses_agent_code)
    loaded = load_model(str(tmp_path / "r"))
    assert loaded.predict({"input": [{"role": "user", "content": "yo"}]})["output"][0]["content"][0]["text"] == "yo"
    events = list(loaded.predict_stream({"input": [{"role": "user", "content": "a b"}]}))
    assert [e["type"] for e in events] == ["response.output_text.delta"] * 2 + ["response.output_item.done"]
    assert loaded.unwrap_python_model().__class__.__name__ == "EchoResponsesAgent"
