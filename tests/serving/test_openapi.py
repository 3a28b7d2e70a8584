"""``/openapi.json``: every route with its request body and answers from the protocol types, valid OpenAPI
(openapi-spec-validator), and true to the server: schemathesis's generated requests, valid and invalid, against
a real agent server and a real LLM server, get no 5xx and no invalid request accepted."""

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest


@pytest.fixture(scope="module")
def echo_dir(tmp_path_factory, write_code, chat_agent_source):
    from servelm.flavors.pyfunc import save_model

    tmp = tmp_path_factory.mktemp("openapi")
    save_model(str(tmp / "echo"), python_model=write_code(tmp, "agent.py", chat_agent_source))
    return str(tmp / "echo")


def test_the_document_is_valid_openapi_and_describes_the_bodies(echo_dir, serve):
    from openapi_spec_validator import validate

    with serve(echo_dir) as (base, _):
        doc = httpx.get(f"{base}/openapi.json", timeout=120).json()
        assert httpx.get(f"{base}/docs", timeout=120).status_code == 404  # the interactive docs only with --docs
    validate(doc)
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "messages" in doc["components"]["schemas"][body]["properties"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    error = chat["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(doc["components"]["schemas"][error]["properties"]) == {"error"}
    assert {"/v1/completions", "/v1/responses", "/invocations", "/v1/models", "/health"} <= set(doc["paths"])


def test_docs_behind_a_flag(echo_dir, serve):
    with serve(echo_dir, docs=True) as (base, _):
        assert httpx.get(f"{base}/docs", timeout=120).status_code == 200


@pytest.mark.parametrize("which", ["agent", "llm"])
def test_schemathesis_finds_no_server_error_and_no_accepted_bad_data(which, request, free_port, wait_healthy, tmp_path):
    """A fixed seed and a small budget per operation: the same cases every run (about a minute for the LLM)."""
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("schemathesis is not installed here")
    if which == "agent":
        model = request.getfixturevalue("echo_dir")
    else:  # answers of 4 tokens unless a request asks for more (the default, 512, would make the run minutes long)
        from servelm.flavors.transformers import save_model

        model = str(tmp_path / "tiny")
        save_model(request.getfixturevalue("tiny_llama"), model, model_config={"max_tokens": 4})
    server = subprocess.Popen(
        [sys.executable, "-m", "servelm.serving.cli", "serve", "-m", model, "--port", str(free_port)],
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{free_port}"
    try:
        wait_healthy(base)
        run = subprocess.run(
            [cli, "run", f"{base}/openapi.json", "--checks", "not_a_server_error,negative_data_rejection"]
            + ["--max-examples", "10", "--seed", "1", "--workers", "1", "--request-timeout", "300"],
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=tmp_path,  # schemathesis's own files land there
        )
    finally:
        server.terminate()
        server.wait(timeout=300)
    assert run.returncode == 0, run.stdout[-6000:]
