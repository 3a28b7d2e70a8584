"""The engine process (the transformers engine's default): a model that fails to load in it, and a child
that dies while serving."""

import os
import signal

import httpx
import pytest

pytest.importorskip("torch")

from servelm.flavors.transformers import save_model  # noqa: E402
from servelm.serving.engines.process import ProcessEngine  # noqa: E402


def test_child_death_fails_open_requests_and_health(tiny_llama_dir, serve):
    with serve(tiny_llama_dir) as (base, app):
        engine = app.state.servelm.service.engine
        assert isinstance(engine, ProcessEngine)
        body = {
            "messages": [{"role": "user", "content": "long"}],
            "max_tokens": 1900,
            "temperature": 0,
            "ignore_eos": True,
        }
        with httpx.stream("POST", f"{base}/v1/chat/completions", json={**body, "stream": True}, timeout=120) as resp:
            lines = resp.iter_lines()
            next(lines)
            os.kill(engine._process.pid, signal.SIGKILL)  # the engine process dies mid-stream
            rest = "\n".join(lines)
        assert '"error"' in rest and "engine process died" in rest and rest.rstrip().endswith("data: [DONE]")
        health = httpx.get(f"{base}/health")
        assert health.status_code == 503 and "engine process died" in health.json()["detail"]
        refused = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_unavailable"


def test_model_that_fails_in_the_child_is_reported_on_health(tmp_path, tiny_llama, serve, wait_until):
    path = tmp_path / "broken"
    save_model(tiny_llama, str(path))
    weights = next((path / "model").glob("*.safetensors"))
    weights.write_bytes(b"not safetensors")
    # the tokenizer and config load in the server process; the weights only in the engine process
    with serve(str(path), healthy=False) as (base, _):
        wait_until(lambda: httpx.get(f"{base}/health").json().get("status") == "error", timeout=300)
        health = httpx.get(f"{base}/health")
        assert health.status_code == 503 and health.json()["status"] == "error"
        assert "SafetensorError" in health.json()["detail"]
