"""The ``servelm`` CLI as a real subprocess: serve, drain on SIGTERM, clear errors, help."""

import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from servelm.flavors.pyfunc import save_model

SLOW_AGENT = '''
import os
import time
from servelm.agents import ChatAgent, ChatAgentMessage, ChatAgentResponse
from servelm.flavors import set_model

class SlowAgent(ChatAgent):
    """Answers "done"; when the last message is a file path, only once that file exists (at most a minute)."""

    def predict(self, messages, context=None, custom_inputs=None):
        gate = messages[-1].content
        deadline = time.monotonic() + 300
        while os.path.isabs(gate) and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="done")])

set_model(SlowAgent())
'''

CLI = [sys.executable, "-m", "servelm.serving.cli"]


def running_requests(base):
    """servelm_num_requests_running as /metrics reports it."""
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("servelm_num_requests_running "):
            return float(line.split()[-1])
    return None


def refuses_connections(base):
    """Whether a new connection is refused. A connection that lands in the accept queue just as the server
    closes its listening socket is reset without an answer: not yet refused, so the caller asks again."""
    try:
        httpx.get(f"{base}/health", timeout=5)
    except httpx.ConnectError:
        return True
    except (httpx.ReadError, httpx.RemoteProtocolError):
        return False
    return False


def test_serve_answers_and_drains_on_sigterm(tmp_path, free_port, wait_healthy, wait_until):
    (tmp_path / "agent.py").write_text(SLOW_AGENT)
    save_model(str(tmp_path / "slow"), python_model=str(tmp_path / "agent.py"))
    gate = tmp_path / "done-working"
    proc = subprocess.Popen(
        CLI + ["serve", "-m", str(tmp_path / "slow"), "--port", str(free_port), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{free_port}"
    try:
        wait_healthy(base)
        assert httpx.get(f"{base}/v1/models").json()["data"][0]["id"] == "slow"
        result = {}

        def slow_request():
            result["reply"] = httpx.post(
                f"{base}/v1/chat/completions", json={"messages": [{"role": "user", "content": str(gate)}]}, timeout=300
            )

        thread = threading.Thread(target=slow_request)
        thread.start()
        assert wait_until(lambda: running_requests(base) == 1.0, timeout=120)  # the server is running the request
        proc.send_signal(signal.SIGTERM)
        # draining: the listening socket closes at once, while the request is still being worked on
        assert wait_until(lambda: refuses_connections(base), timeout=120)
        assert thread.is_alive() and proc.poll() is None
        gate.touch()  # the agent finishes its work
        thread.join(timeout=120)
        assert (
            result["reply"].status_code == 200 and result["reply"].json()["choices"][0]["message"]["content"] == "done"
        )
        assert proc.wait(timeout=120) == 0
    finally:
        gate.touch()
        if proc.poll() is None:
            proc.kill()


def test_bad_directory_is_a_clear_error(tmp_path):
    proc = subprocess.run(CLI + ["serve", "-m", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "no MLmodel file and is not a Hugging Face checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_commands():
    out = subprocess.run(CLI + ["--help"], capture_output=True, text=True, timeout=300).stdout
    assert "serve" in out and "demo" in out
    serve_help = subprocess.run(
        CLI + ["serve", "--help"], capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "80"}
    ).stdout
    for flag in (  # whole at 80 columns, none cut short
        "--model",
        "--api-key",
        "--max-concurrency",
        "--max-queue",
        "--timeout",
        "--workers",
        "--served-model-name",
        "--stay-up-on-load-error",
        "--gpu-memory-utilization",
        "--tensor-parallel-size",
        "--no-engine-process",
    ):
        assert flag in serve_help, flag
    assert all(len(line) <= 80 for line in serve_help.splitlines()), serve_help


def test_vllm_engine_without_vllm_says_how_to_install(tmp_path, tiny_llama):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    proc = subprocess.run(
        CLI + ["serve", "-m", tiny_llama, "--engine", "vllm"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and "pip install 'servelm[vllm]'" in proc.stderr and "Traceback" not in proc.stderr


def broken_code_model(tmp_path):
    """A models-from-code directory whose code file no longer parses."""
    (tmp_path / "agent.py").write_text(SLOW_AGENT)
    save_model(str(tmp_path / "broken"), python_model=str(tmp_path / "agent.py"))
    for code in (tmp_path / "broken").rglob("agent.py"):
        code.write_text("def broken(:\n")
    return str(tmp_path / "broken")


@pytest.mark.parametrize("case", ["syntax error in the code", "onnx engine on a transformers directory", "no cuda"])
def test_a_model_that_fails_to_load_exits_with_the_reason_on_one_line(tmp_path, tiny_llama_dir, free_port, case):
    if case == "syntax error in the code":
        argv = ["-m", broken_code_model(tmp_path)]
    elif case == "onnx engine on a transformers directory":
        argv = ["-m", tiny_llama_dir, "--engine", "onnx"]
    else:
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        argv = ["-m", tiny_llama_dir, "--device", "cuda"]
    proc = subprocess.run(CLI + ["serve", *argv, "--port", str(free_port)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line or line.startswith("Error")]
    assert errors, proc.stderr
    assert "Traceback" not in proc.stderr
