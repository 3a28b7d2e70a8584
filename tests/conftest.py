"""Shared fixtures: example agents written as real files, saved into real model directories."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ECHO_CHAT_AGENT = '''
from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse
from servelm.flavors import set_model


class EchoChatAgent(ChatAgent):
    """Answers with the last message; streams it word by word."""

    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=messages[-1].content, id="msg-1")],
            custom_outputs=custom_inputs,
        )

    def predict_stream(self, messages, context=None, custom_inputs=None):
        for word in messages[-1].content.split(" "):
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=word + " ", id="msg-1"))


set_model(EchoChatAgent())
'''

ECHO_RESPONSES_AGENT = '''
from servelm.agents import ResponsesAgent, ResponsesAgentResponse, ResponsesAgentStreamEvent
from servelm.flavors import set_model


class EchoResponsesAgent(ResponsesAgent):
    def predict(self, request):
        text = request.input[-1].text()
        return ResponsesAgentResponse(output=[self.create_text_output_item(text=text, id="msg-1")])

    def predict_stream(self, request):
        text = request.input[-1].text()
        for word in text.split(" "):
            yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=word + " ", item_id="msg-1"))
        yield ResponsesAgentStreamEvent(type="response.output_item.done", item=self.create_text_output_item(text=text, id="msg-1"))


set_model(EchoResponsesAgent())
'''

ECHO_CHAT_MODEL = '''
from servelm.agents import ChatModel, ChatCompletionResponse, ChatChoice, ChatMessage, ChatCompletionChunk, ChatChunkChoice, ChatChoiceDelta
from servelm.flavors import set_model


class EchoChatModel(ChatModel):
    def predict(self, context, messages, params):
        return ChatCompletionResponse(choices=[ChatChoice(message=ChatMessage(role="assistant", content=messages[-1].text()))])

    def predict_stream(self, context, messages, params):
        for word in messages[-1].text().split(" "):
            yield ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(content=word + " "))])


set_model(EchoChatModel())
'''


def write_code(tmp_path: Path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


@pytest.fixture
def chat_agent_code(tmp_path: Path) -> str:
    return write_code(tmp_path, "echo_chat_agent.py", ECHO_CHAT_AGENT)


@pytest.fixture
def responses_agent_code(tmp_path: Path) -> str:
    return write_code(tmp_path, "echo_responses_agent.py", ECHO_RESPONSES_AGENT)


@pytest.fixture
def chat_model_code(tmp_path: Path) -> str:
    return write_code(tmp_path, "echo_chat_model.py", ECHO_CHAT_MODEL)


def run_python(code: str, cwd: str | None = None) -> str:
    """Run code in a fresh interpreter (a real subprocess) and return its stdout; fail with its stderr."""
    proc = subprocess.run([os.path.abspath(sys.executable), "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "mlflow-3.18"


# ------------------------------------------------------------------------------------------ servers
import contextlib
import threading

import httpx

from servelm.serving.demo import free_port, wait_healthy


@contextlib.contextmanager
def running_server(model_or_path, startup_timeout: float = 30.0, **settings):
    """A real uvicorn server on loopback serving ``model_or_path``; yields (base_url, app)."""
    import uvicorn

    from servelm.serving import create_app

    app = create_app(model_or_path, **settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, startup_timeout)
    except RuntimeError:
        server.should_exit = True
        raise
    try:
        yield base, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def sse_lines(base: str, path: str, body: dict, headers: dict | None = None) -> list[str]:
    """Raw SSE lines of a streamed POST (blank lines dropped)."""
    with httpx.stream("POST", f"{base}{path}", json=body, headers=headers or {}, timeout=30) as resp:
        assert resp.status_code == 200, resp.read()
        return [line for line in resp.iter_lines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_llama() -> str:
    """A tiny random Llama checkpoint built locally (cached between runs in ~/.cache/servelm)."""
    pytest.importorskip("torch")
    from servelm.flavors.transformers import tiny_model

    return tiny_model("llama")


@pytest.fixture(scope="session")
def tiny_llama_genai(tmp_path_factory, tiny_llama) -> str:
    """The tiny Llama exported to an onnxruntime-genai folder (fp32, cpu)."""
    pytest.importorskip("onnxruntime_genai")
    from servelm.flavors.onnx import export

    return export(tiny_llama, str(tmp_path_factory.mktemp("genai") / "tiny-llama-genai"))
