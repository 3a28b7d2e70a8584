"""Logging as ``servelm serve`` sets it up: one format (time, level, logger, message) for servelm and uvicorn,
and one access line per request with method, path, status, duration and, on LLM routes, tokens."""

import re
import signal
import subprocess
import sys

import httpx

from servelm.flavors.pyfunc import save_model

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def serve_and_log(model_dir, free_port, wait_healthy, requests):
    """Run ``servelm serve`` at the default log level, make ``requests`` (method, path, json), stop it;
    its stderr lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "servelm.serving.cli", "serve", "-m", model_dir, "--port", str(free_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{free_port}"
    try:
        wait_healthy(base)
        for method, path, body in requests:
            httpx.request(method, f"{base}{path}", json=body, timeout=300)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    return [line for line in stderr.splitlines() if line.strip()]


def test_one_format_and_an_access_line_per_request(tmp_path, chat_agent_code, free_port, wait_healthy):
    save_model(str(tmp_path / "echo"), python_model=chat_agent_code)
    lines = serve_and_log(
        str(tmp_path / "echo"),
        free_port,
        wait_healthy,
        [
            ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
            ("POST", "/v1/chat/completions", {"messages": []}),
            ("GET", "/v1/nowhere", None),
        ],
    )
    assert all(LINE.match(line) for line in lines), "\n".join(lines)
    assert any("uvicorn" in line for line in lines) and any("servelm" in line for line in lines)
    access = [line for line in lines if " servelm.access: " in line]
    assert any(re.search(r" POST /v1/chat/completions 200 [\d.]+ms", line) for line in access), access
    assert any(" POST /v1/chat/completions 400 " in line and "error=" in line for line in access), access
    assert any(" GET /v1/nowhere 404 " in line for line in access), access


def test_llm_access_lines_count_tokens(tiny_llama_dir, free_port, wait_healthy):
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3, "ignore_eos": True}  # exactly 3
    lines = serve_and_log(tiny_llama_dir, free_port, wait_healthy, [("POST", "/v1/chat/completions", body)])
    access = [line for line in lines if " servelm.access: " in line and "/v1/chat/completions" in line]
    assert access and re.search(r" 200 [\d.]+ms tokens=\d+\+3", access[0]), lines
