"""Both ways: servelm serves directories MLflow saved (pyfunc, ChatModel, ChatAgent, ResponsesAgent as code
and as cloudpickles, transformers), and MLflow loads directories servelm saved; model URIs resolve through
MLflow. (Skipped where mlflow is not installed; CI's test venv has it.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

mlflow = pytest.importorskip("mlflow", reason="mlflow not installed")

from servelm.flavors.pyfunc import load_model, save_model  # noqa: E402

CHAT = {"messages": [{"role": "user", "content": "hi there"}]}

AGENTS = """
from typing import Any, Optional

import mlflow
from mlflow.pyfunc import ChatAgent, ChatModel, ResponsesAgent
from mlflow.types.agent import ChatAgentChunk, ChatAgentMessage, ChatAgentResponse
from mlflow.types.llm import ChatChoice, ChatCompletionResponse, ChatMessage
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent


class EchoChatAgent(ChatAgent):
    def predict(
        self, messages: list[ChatAgentMessage], context=None, custom_inputs: Optional[dict[str, Any]] = None
    ) -> ChatAgentResponse:
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=messages[-1].content, id="m1")])

    def predict_stream(self, messages, context=None, custom_inputs=None):
        for word in messages[-1].content.split(" "):
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=word + " ", id="m1"))


class EchoChatModel(ChatModel):
    def predict(self, context, messages: list[ChatMessage], params) -> ChatCompletionResponse:
        return ChatCompletionResponse(
            choices=[ChatChoice(index=0, message=ChatMessage(role="assistant", content=messages[-1].content))]
        )


class EchoResponsesAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        text = request.input[-1].content
        return ResponsesAgentResponse(output=[self.create_text_output_item(text=text, id="msg-1")])

    def predict_stream(self, request):
        text = request.input[-1].content
        for word in text.split(" "):
            yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=word + " ", item_id="msg-1"))
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done", item=self.create_text_output_item(text=text, id="msg-1")
        )
"""


@pytest.fixture(autouse=True)
def _mlflow_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def mlflow_agents(tmp_path, write_code):
    """The three MLflow agent kinds, each saved by MLflow as a code model and as a cloudpickle."""
    sys.path.insert(0, str(tmp_path))
    write_code(tmp_path, "mlflow_agents_mod.py", AGENTS)
    import mlflow_agents_mod as mod

    dirs = {}
    for name in ("EchoChatAgent", "EchoChatModel", "EchoResponsesAgent"):
        code = write_code(tmp_path, f"{name}.py", AGENTS + f"\nmlflow.models.set_model({name}())\n")
        mlflow.pyfunc.save_model(str(tmp_path / f"{name}-code"), python_model=code)
        mlflow.pyfunc.save_model(str(tmp_path / f"{name}-pickle"), python_model=getattr(mod, name)())
        dirs[name] = [str(tmp_path / f"{name}-code"), str(tmp_path / f"{name}-pickle")]
    yield dirs
    sys.path.remove(str(tmp_path))
    sys.modules.pop("mlflow_agents_mod", None)


def test_mlflow_agents_are_served_on_their_routes(mlflow_agents, serve, openai_client, sse_lines):
    """MLflow-saved ChatAgent / ChatModel / ResponsesAgent (code and pickle) on chat, Responses and /invocations."""
    for name, dirs in mlflow_agents.items():
        for path in dirs:
            assert load_model(path).predict(
                CHAT if name != "EchoResponsesAgent" else {"input": [{"role": "user", "content": "hi there"}]}
            )
            with serve(path) as (base, _):
                client, m = openai_client(base), os.path.basename(path)
                chat = client.chat.completions.create(model=m, messages=CHAT["messages"])
                assert chat.choices[0].message.content == "hi there", (name, path)
                assert client.responses.create(model=m, input="hi there").output_text.strip() == "hi there", (
                    name,
                    path,
                )
                streamed = "".join(
                    c.choices[0].delta.content or ""
                    for c in client.chat.completions.create(model=m, messages=CHAT["messages"], stream=True)
                    if c.choices
                )
                assert streamed.strip() == "hi there", (name, path)
                if name == "EchoChatAgent":
                    assert httpx.post(f"{base}/invocations", json=CHAT).json()["messages"][0]["content"] == "hi there"
                    lines = sse_lines(base, "/invocations", {**CHAT, "stream": True})
                    assert [
                        json.loads(line[6:])["delta"]["content"] for line in lines if line.startswith("data: ")
                    ] == ["hi ", "there "]


def test_reference_directories_of_mlflow_3_18(mlflow_reference, tmp_path, serve, openai_client):
    """The directories MLflow 3.18 saved (tests/data/mlflow-3.18) load and serve unchanged."""
    import shutil

    for name in ("chat_agent_code", "chat_model_code", "responses_agent_code", "upper_code"):
        path = tmp_path / name
        shutil.copytree(mlflow_reference / name, path)
        model = load_model(str(path))
        assert model.predict(model.input_example), name
    with serve(str(tmp_path / "chat_agent_code")) as (base, _):
        assert (
            openai_client(base)
            .chat.completions.create(model="chat_agent_code", messages=CHAT["messages"])
            .choices[0]
            .message.content
            == "hi there"
        )
    with serve(str(tmp_path / "upper_code")) as (base, _):
        assert httpx.post(f"{base}/invocations", json={"inputs": ["a", "b"]}).json() == {"predictions": ["A", "B"]}


def test_mlflow_types_where_servelm_types_are_expected():
    """A servelm agent may build its answer from MLflow's type objects."""
    from mlflow.types.agent import ChatAgentMessage as MlflowMessage

    from servelm.agents import CHAT_AGENT_INPUT_EXAMPLE, ChatAgent, ChatAgentMessage, ChatAgentResponse, ChatMessage
    from servelm.serving.services.build import in_memory_pyfunc

    class Mixed(ChatAgent):
        def predict(self, messages, context=None, custom_inputs=None):
            return ChatAgentResponse(messages=[MlflowMessage(role="assistant", content=messages[-1].content, id="x")])

    assert in_memory_pyfunc(Mixed()).predict(CHAT_AGENT_INPUT_EXAMPLE)["messages"][0]["content"] == "Hello!"
    assert ChatMessage(role="user", content="hi").to_dict() == {"role": "user", "content": "hi"}
    assert ChatAgentMessage(role="user", content="hi", id="1").model_dump_compat(exclude_none=True) == {
        "role": "user",
        "content": "hi",
        "id": "1",
    }
    assert ChatAgentMessage.model_validate(MlflowMessage(role="user", content="x", id="2")).id == "2"


def test_mlflow_loads_servelm_directories(tmp_path, chat_agent_code, chat_model_code, responses_agent_code):
    """mlflow.pyfunc.load_model on servelm's directories: pyfunc, ChatModel, ChatAgent, ResponsesAgent."""
    from servelm.agents import PythonModel

    class Upper(PythonModel):
        def predict(self, model_input: list[str], params=None) -> list[str]:
            return [s.upper() for s in model_input]

    save_model(str(tmp_path / "upper"), python_model=Upper(), input_example=["a"])
    assert mlflow.pyfunc.load_model(str(tmp_path / "upper")).predict(["x"]) == ["X"]
    for code, body, read in (
        (chat_agent_code, CHAT, lambda out: out["messages"][0]["content"]),
        (chat_model_code, CHAT, lambda out: out["choices"][0]["message"]["content"]),
        (
            responses_agent_code,
            {"input": [{"role": "user", "content": "hi there"}]},
            lambda out: out["output"][0]["content"][0]["text"],
        ),
    ):
        path = str(tmp_path / code.split("/")[-1][:-3])
        save_model(path, python_model=code)
        assert read(mlflow.pyfunc.load_model(path).predict(body)) == "hi there", code


def test_transformers_both_ways(tmp_path, tiny_llama, serve, openai_client):
    """A tiny Llama saved by mlflow.transformers is served by servelm's transformers engine (its model_config
    max_new_tokens the default cap), and servelm's transformers directory loads in MLflow."""
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama)
    path = str(tmp_path / "mlflow-llm")
    mlflow.transformers.save_model(
        {"model": model, "tokenizer": tokenizer},
        path,
        task="llm/v1/chat",
        model_config={"max_new_tokens": 5},
        pip_requirements=["torch", "transformers"],
    )  # MLflow's inferred ones look for torchvision
    assert (
        load_model(path).predict({"messages": CHAT["messages"], "max_tokens": 2, "temperature": 0})[0]["choices"][0][
            "message"
        ]["role"]
        == "assistant"
    )
    with serve(path, engine_process=False, startup_timeout=600) as (base, _):
        reply = openai_client(base).chat.completions.create(
            model="mlflow-llm", messages=CHAT["messages"], temperature=0
        )
        assert reply.usage.completion_tokens <= 5 and reply.choices[0].finish_reason == "length"
        assert (
            openai_client(base)
            .chat.completions.create(model="mlflow-llm", messages=CHAT["messages"], max_tokens=7, temperature=0)
            .usage.completion_tokens
            == 7
        )

    from servelm.flavors.transformers import save_model as save_llm

    mine = str(tmp_path / "servelm-llm")
    save_llm(tiny_llama, mine)
    loaded = mlflow.pyfunc.load_model(mine)
    out = loaded.predict({"messages": CHAT["messages"], "max_tokens": 3, "temperature": 0})
    assert out[0]["choices"][0]["message"]["role"] == "assistant"


def test_runs_uri_for_load_serve_and_predict(tmp_path, serve, free_port):
    """runs:/ URIs resolve through MLflow's client for load_model, create_app (serve) and servelm predict."""

    class Upper(mlflow.pyfunc.PythonModel):
        def predict(self, model_input: list[str], params=None) -> list[str]:
            return [s.upper() for s in model_input]

    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=Upper(), input_example=["a"])
    uri = f"runs:/{run.info.run_id}/model"
    assert load_model(uri).predict(["q"]) == ["Q"]
    with serve(uri) as (base, _):
        assert httpx.post(f"{base}/invocations", json={"inputs": ["w"]}).json() == {"predictions": ["W"]}
    (tmp_path / "in.json").write_text(json.dumps({"inputs": ["e"]}))
    proc = subprocess.run(
        [sys.executable, "-m", "servelm.serving.cli", "predict", "-m", uri, "-i", str(tmp_path / "in.json")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"predictions": ["E"]}


def test_get_model_dependencies_and_raw_model(tmp_path):
    from servelm.agents import PythonModel
    from servelm.flavors.pyfunc import get_model_dependencies

    class M(PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    raw = M()
    save_model(str(tmp_path / "m"), python_model=raw, pip_requirements=["pandas", "numpy"])
    assert open(get_model_dependencies(str(tmp_path / "m"))).read().splitlines() == ["pandas", "numpy"]
    assert get_model_dependencies(str(tmp_path / "m"), format="conda").endswith("conda.yaml")
    loaded = load_model(str(tmp_path / "m"))
    assert type(loaded.get_raw_model()) is M and type(loaded.unwrap_python_model()) is M
    assert loaded.loader_module == "servelm.flavors.pyfunc.loader"
    mlflow_loaded = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    assert mlflow_loaded.loader_module == loaded.loader_module
