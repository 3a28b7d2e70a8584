"""The quickstart demo: save an example agent, serve it on loopback, query it with the openai client."""

from __future__ import annotations

import socket
import tempfile
import textwrap
import threading
import time
from pathlib import Path

EXAMPLE_AGENT = '''
"""An example ChatAgent: answers by reversing the words of the last message, streaming word by word."""

from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse
from servelm.flavors import set_model


class ReverseAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        words = (messages[-1].content or "").split()
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=" ".join(reversed(words)), id="msg-1")])

    def predict_stream(self, messages, context=None, custom_inputs=None):
        words = (messages[-1].content or "").split()
        for i, word in enumerate(reversed(words)):
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=("" if i == 0 else " ") + word, id="msg-1"))


set_model(ReverseAgent())
'''


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(port: int, question: str) -> None:
    """Save, serve and query the example agent; prints each step."""
    import uvicorn

    from servelm.flavors.pyfunc import save_model

    from .app import create_app

    workdir = Path(tempfile.mkdtemp(prefix="servelm-demo-"))
    code = workdir / "reverse_agent.py"
    code.write_text(textwrap.dedent(EXAMPLE_AGENT))
    model_dir = workdir / "reverse-agent"
    save_model(str(model_dir), python_model=str(code))
    print(f"saved example agent to {model_dir}")

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(str(model_dir)), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base)
    print(f"serving on {base}/v1 (try: curl {base}/v1/models)")
    try:
        _ask(base, question)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_healthy(base: str, timeout: float = 30.0) -> None:
    """Poll ``base``/health until it answers 200; an error after ``timeout`` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server at {base} did not become healthy in {timeout:g} s")


def _ask(base: str, question: str) -> None:
    try:
        from openai import OpenAI
    except ImportError:
        import httpx

        reply = httpx.post(f"{base}/v1/chat/completions", json={"model": "reverse-agent", "messages": [{"role": "user", "content": question}]}).json()
        print("answer:", reply["choices"][0]["message"]["content"])
        print("(install the 'openai' package to see the streamed and Responses API calls too)")
        return
    client = OpenAI(base_url=f"{base}/v1", api_key="unused")
    reply = client.chat.completions.create(model="reverse-agent", messages=[{"role": "user", "content": question}])
    print("answer:", reply.choices[0].message.content)
    print("streamed:", end=" ", flush=True)
    for chunk in client.chat.completions.create(model="reverse-agent", messages=[{"role": "user", "content": question}], stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()
    response = client.responses.create(model="reverse-agent", input=question)
    print("responses API:", response.output_text)
