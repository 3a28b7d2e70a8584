"""The engine process: a model that fails to load in it, and a child that dies while serving."""

import os
import signal
import threading
import time

import httpx
import pytest

pytest.importorskip("torch")

import uvicorn  # noqa: E402

from conftest import free_port, running_server  # noqa: E402
from servelm.flavors.transformers import save_model  # noqa: E402
from servelm.serving import create_app  # noqa: E402


def test_child_death_fails_open_requests_and_health(tmp_path, tiny_llama):
    path = tmp_path / "tiny"
    save_model(tiny_llama, str(path))
    with running_server(str(path)) as (base, app):
        engine = app.state.servelm.service.engine
        body = {"messages": [{"role": "user", "content": "long"}], "max_tokens": 1900, "temperature": 0, "ignore_eos": True}
        with httpx.stream("POST", f"{base}/v1/chat/completions", json={**body, "stream": True}, timeout=30) as resp:
            lines = resp.iter_lines()
            next(lines)
            os.kill(engine._process.pid, signal.SIGKILL)  # the engine process dies mid-stream
            rest = "\n".join(lines)
        assert '"error"' in rest and "engine process died" in rest and rest.rstrip().endswith("data: [DONE]")
        health = httpx.get(f"{base}/health")
        assert health.status_code == 503 and "engine process died" in health.json()["detail"]
        refused = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_unavailable"


def test_model_that_fails_in_the_child_is_reported_on_health(tmp_path, tiny_llama):
    path = tmp_path / "broken"
    save_model(tiny_llama, str(path))
    weights = next((path / "model").glob("*.safetensors"))
    weights.write_bytes(b"not safetensors")
    app = create_app(str(path))  # the tokenizer and config load here; the weights only in the engine process
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health")
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if health.json().get("status") == "error":
                break
            time.sleep(0.2)
        assert health.status_code == 503 and health.json()["status"] == "error"
        assert "SafetensorError" in health.json()["detail"]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
