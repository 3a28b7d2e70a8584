"""Stops that finish answers (``serving/shutdown.py``), on a real ``servelm serve`` of each engine: on SIGTERM
or Ctrl+C the open streams run to their last token, or, still open at the end of the graceful timeout, end
with an error event and ``[DONE]``; never a bare close. Ctrl+C prints no traceback and no engine death."""

import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from servelm.flavors.pyfunc import save_model

SLOW_STREAMING_AGENT = """
import time
from servelm.agents import ChatAgent, ChatAgentChunk, ChatAgentMessage, ChatAgentResponse
from servelm.flavors import set_model

class Slow(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="x")])

    def predict_stream(self, messages, context=None, custom_inputs=None):
        for i in range(int(messages[-1].content)):  # a word every 20 ms
            time.sleep(0.02)
            yield ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=f"w{i} ", id="m"))

set_model(Slow())
"""


@pytest.fixture
def model_dir(request, tmp_path):
    """(directory, body of a stream that takes many seconds) for the engine named by the parameter."""
    engine = request.param
    if engine == "agent":
        (tmp_path / "agent.py").write_text(SLOW_STREAMING_AGENT)
        save_model(str(tmp_path / "slow"), python_model=str(tmp_path / "agent.py"))
        return str(tmp_path / "slow"), {"messages": [{"role": "user", "content": "100000"}], "stream": True}
    pytest.importorskip("torch")
    if engine == "onnx":
        pytest.importorskip("onnxruntime_genai")
    directory = request.getfixturevalue("tiny_onnx_dir" if engine == "onnx" else "tiny_llama_dir")
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000, "ignore_eos": True, "stream": True}
    return directory, body


def serve_and_stop(directory, body, signum, graceful, free_port, wait_healthy, wait_until, streams=3):
    """``servelm serve`` the directory, open ``streams`` streams, send ``signum`` once each has its first event;
    (each stream's SSE lines, the server's exit code, its stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "servelm.serving.cli", "serve", "-m", directory, "--port", str(free_port)]
        + ["--graceful-timeout", str(graceful)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl+C reaches it (server and engine)
    )
    base = f"http://127.0.0.1:{free_port}"
    lines: list[list[str]] = [[] for _ in range(streams)]
    started = threading.Semaphore(0)

    def read(i):
        try:
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as resp:
                for line in resp.iter_lines():
                    if line.strip():
                        if not lines[i]:
                            started.release()
                        lines[i].append(line)
        except httpx.HTTPError as exc:
            lines[i].append(f"transport error: {exc!r}")
            started.release()

    try:
        wait_healthy(base)
        readers = [threading.Thread(target=read, args=(i,)) for i in range(streams)]
        for reader in readers:
            reader.start()
        for _ in readers:
            assert started.acquire(timeout=300)
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signum)
        for reader in readers:
            reader.join(timeout=300)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return lines, proc.returncode, stderr


@pytest.mark.parametrize("model_dir", ["transformers", "onnx", "agent"], indirect=True)
def test_streams_open_at_the_graceful_timeout_end_with_an_error_event(model_dir, free_port, wait_healthy, wait_until):
    directory, body = model_dir
    # --graceful-timeout 1: the streams are cut at once (one second before uvicorn would cancel them), while even
    # the fastest engine is still generating; the Ctrl+C test below lets them finish
    lines, code, stderr = serve_and_stop(directory, body, signal.SIGTERM, 1, free_port, wait_healthy, wait_until)
    for stream in lines:
        assert stream[-1] == "data: [DONE]", stream[-3:]
        assert '"code":"server_shutting_down"' in stream[-2], stream[-3:]
        assert len(stream) >= 3  # its first tokens, then the error event and [DONE]
    assert code == 0 and "Traceback" not in stderr, stderr[-3000:]


@pytest.mark.parametrize("model_dir", ["transformers"], indirect=True)
def test_ctrl_c_lets_streams_finish_and_says_one_line(model_dir, free_port, wait_healthy, wait_until):
    directory, body = model_dir
    body = {**body, "max_tokens": 200}
    lines, code, stderr = serve_and_stop(directory, body, signal.SIGINT, 60, free_port, wait_healthy, wait_until)
    for stream in lines:
        assert stream[-1] == "data: [DONE]" and '"finish_reason":"length"' in stream[-2], stream[-3:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert "died" not in stderr and " ERROR " not in stderr, stderr[-3000:]
    assert sum("SIGINT: stopping" in line for line in stderr.splitlines()) == 1, stderr[-3000:]
