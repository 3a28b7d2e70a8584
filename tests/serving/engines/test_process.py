"""The engine process (the transformers engine's default): a model that fails to load in it, and a child
that dies while serving."""

import os
import signal

import httpx
import psutil
import pytest

pytest.importorskip("torch")

from servelm.flavors.transformers import save_model  # noqa: E402
from servelm.serving.engines.process import ProcessEngine  # noqa: E402


def test_child_death_fails_open_requests_then_the_engine_comes_back(tiny_llama_dir, serve, wait_until):
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
        assert refused.headers["retry-after"] == "1"
        # a new engine process comes up after a backoff: /health 503 -> 200, and the next request is answered
        assert wait_until(lambda: httpx.get(f"{base}/health").status_code == 200, timeout=300)
        again = httpx.post(f"{base}/v1/chat/completions", json={**body, "max_tokens": 4}, timeout=120)
        assert again.status_code == 200 and again.json()["usage"]["completion_tokens"] == 4
        assert "servelm_engine_restarts_total 1.0" in httpx.get(f"{base}/metrics").text


def test_an_engine_that_keeps_dying_makes_the_server_exit(
    tiny_llama_dir, free_port, wait_healthy, wait_until, tmp_path
):
    """Past MAX_RESTARTS deaths within the window the server gives up: it exits non-zero with the reason (for an
    orchestrator to restart it), rather than serving 503s for ever."""
    import subprocess
    import sys

    from servelm.serving.engines.process import MAX_RESTARTS

    log = open(tmp_path / "server.log", "w+")  # a file, not a pipe: nobody reads stderr while the server runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "servelm.serving.cli", "serve", "-m", tiny_llama_dir, "--port", str(free_port)],
        stderr=log,
        text=True,
    )
    base = f"http://127.0.0.1:{free_port}"

    def health() -> int | None:
        """/health's status code, or None while the server is going away (its socket closes as it exits)."""
        try:
            return httpx.get(f"{base}/health").status_code
        except httpx.TransportError:
            return None

    try:
        wait_healthy(base)
        for _ in range(MAX_RESTARTS + 1):
            assert wait_until(lambda: health() == 200, timeout=300)
            (engine,) = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
            engine.kill()
            assert wait_until(lambda: proc.poll() is not None or health() == 503)
        assert proc.wait(timeout=300) == 1
        stderr = (tmp_path / "server.log").read_text()
        assert "giving up" in stderr.splitlines()[-1] and "Traceback" not in stderr, stderr[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


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
