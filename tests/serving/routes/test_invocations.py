"""/invocations: MLflow scoring formats, params, agent bodies answered raw, streaming, errors named."""

import json

import httpx

from servelm.agents import PythonModel
from servelm.flavors.pyfunc import save_model


class Upper(PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        suffix = (params or {}).get("suffix", "")
        return [s.upper() + suffix for s in model_input]


class Records(PythonModel):
    def predict(self, context, model_input, params=None):
        rows = model_input.to_dict(orient="records") if hasattr(model_input, "to_dict") else model_input
        return [r["a"] + r["b"] for r in rows]


def test_mlflow_formats(tmp_path, serve):
    save_model(str(tmp_path / "upper"), python_model=Upper(), input_example=["a"])
    with serve(str(tmp_path / "upper")) as (base, _):
        assert httpx.post(f"{base}/invocations", json={"inputs": ["a", "b"]}).json() == {"predictions": ["A", "B"]}
        # the signature comes from the type hints: `inputs` only, as MLflow's scoring server
        assert httpx.post(f"{base}/invocations", json={"instances": ["c"]}).status_code == 400
        bad = httpx.post(f"{base}/invocations", json={"inputs": [1]})
        assert bad.status_code == 400
        assert "valid string" in bad.json()["error"]["message"]
        both = httpx.post(f"{base}/invocations", json={"inputs": ["a"], "instances": ["b"]})
        assert both.status_code == 400 and "exactly one" in both.json()["error"]["message"]
    save_model(str(tmp_path / "rec"), python_model=Records())
    with serve(str(tmp_path / "rec")) as (base, _):
        split = {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}}
        assert httpx.post(f"{base}/invocations", json=split).json() == {"predictions": [3, 7]}
        records = {"dataframe_records": [{"a": 1, "b": 1}]}
        assert httpx.post(f"{base}/invocations", json=records).json() == {"predictions": [2]}


def test_params_pass_through(tmp_path, serve):
    class WithParams(PythonModel):
        def predict(self, context, model_input: list[str], params=None):  # hinted: a list, not MLflow's DataFrame
            return [f"{x}{params['suffix']}" for x in model_input]

    save_model(str(tmp_path / "m"), python_model=WithParams(), input_example=(["a"], {"suffix": "!"}))
    with serve(str(tmp_path / "m")) as (base, _):
        assert httpx.post(f"{base}/invocations", json={"inputs": ["a"]}).json() == {"predictions": ["a!"]}
        assert httpx.post(f"{base}/invocations", json={"inputs": ["a"], "params": {"suffix": "?"}}).json() == {
            "predictions": ["a?"]
        }


def test_agent_body_is_raw_and_streams(tmp_path, chat_agent_code, serve, sse_lines):
    save_model(str(tmp_path / "m"), python_model=chat_agent_code)
    with serve(str(tmp_path / "m")) as (base, _):
        reply = httpx.post(f"{base}/invocations", json={"messages": [{"role": "user", "content": "hi you"}]}).json()
        assert reply["messages"][0]["content"] == "hi you"
        lines = sse_lines(base, "/invocations", {"messages": [{"role": "user", "content": "hi you"}], "stream": True})
        chunks = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
        assert [c["delta"]["content"] for c in chunks] == ["hi ", "you "]


def test_async_agent_invocations_and_bad_body(serve, sse_lines):
    from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse

    class AsyncEcho(ChatAgent):
        async def apredict(self, messages, context=None, custom_inputs=None):
            return ChatAgentResponse(
                messages=[ChatAgentMessage(role="assistant", content=messages[-1].content, id="m")]
            )

        async def apredict_stream(self, messages, context=None, custom_inputs=None):
            for word in messages[-1].content.split():
                yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=word, id="m"))

    with serve(AsyncEcho()) as (base, _):
        assert (
            httpx.post(f"{base}/invocations", json={"messages": [{"role": "user", "content": "a b"}]}).json()[
                "messages"
            ][0]["content"]
            == "a b"
        )
        lines = sse_lines(base, "/invocations", {"messages": [{"role": "user", "content": "a b"}], "stream": True})
        assert [json.loads(line[6:])["delta"]["content"] for line in lines if line.startswith("data: ")] == ["a", "b"]
        bad = httpx.post(f"{base}/invocations", json={"messages": [{"role": "user"}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages.0"


def test_an_llm_answers_invocations_as_mlflow_llm_pyfuncs_do(tiny_llama_dir, serve):
    """A chat body, alone or as DataFrame rows, gets a list of chat completions (one per request): the MLflow
    LLM pyfunc's shape, so ``reply[0]["choices"][0]["message"]["content"]`` works as it does against MLflow."""
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}
    with serve(tiny_llama_dir) as (base, _):
        one = httpx.post(f"{base}/invocations", json=chat, timeout=120).json()
        assert isinstance(one, list) and len(one) == 1 and one[0]["object"] == "chat.completion"
        assert one[0]["usage"]["completion_tokens"] == 2
        rows = httpx.post(f"{base}/invocations", json={"dataframe_records": [chat, chat]}, timeout=120).json()
        assert [r["choices"][0]["message"]["content"] for r in rows["predictions"]] == [
            one[0]["choices"][0]["message"]["content"]
        ] * 2
        split = {"columns": ["messages", "max_tokens"], "data": [[chat["messages"], 2]]}
        framed = httpx.post(f"{base}/invocations", json={"dataframe_split": split}, timeout=120).json()
        assert framed["predictions"][0]["usage"]["completion_tokens"] == 2
