"""What ``servelm serve`` serves: ``-m`` repeated (``NAME=PATH`` names one) or a YAML ``--config``; a real two-model
server from the command line (also with ``--workers 2``): both names answer, /v1/models lists both, /health reports
each, an unknown name is a 404 naming the served ones."""

from __future__ import annotations

import subprocess
import sys
import threading

import httpx
import pytest

from servelm.serving.options import EngineOptions
from servelm.serving.serve_config import read_serve_config, specs_from_flags, split_named

CLI = [sys.executable, "-m", "servelm.serving.cli"]


def test_names_and_paths_from_flags(tmp_path):
    existing = tmp_path / "a=b"
    existing.mkdir()
    assert split_named("smollm2=/models/llm") == ("smollm2", "/models/llm")
    assert split_named("/models/llm") == (None, "/models/llm")
    assert split_named(str(existing)) == (None, str(existing))  # a path that exists is a path, "=" or not
    assert split_named("runs:/abc/model") == (None, "runs:/abc/model")
    specs = specs_from_flags(["agent", "tiny=/m/tiny"], EngineOptions(max_num_seqs=8))
    assert [(s.name, s.model, s.engine.max_num_seqs) for s in specs] == [(None, "agent", 8), ("tiny", "/m/tiny", 8)]


def test_a_config_file_names_models_with_their_own_options(tmp_path):
    config = tmp_path / "servelm.yaml"
    config.write_text(
        "port: 9001\nmax_concurrency: 10\nmodels:\n"
        "  - model: agent\n    name: agent\n"
        "  - model: /abs/llm\n    name: smollm2\n    engine: transformers\n    max_num_seqs: 4\n    max_queue: 3\n"
    )
    server, specs = read_serve_config(str(config), {"port": 8000, "max_num_seqs": 64}, extra_models=["x=/m/x"])
    assert server.port == 9001 and server.max_concurrency == 10  # flags left at their defaults do not override
    assert [s.name for s in specs] == ["agent", "smollm2", "x"]
    assert specs[0].model == str(tmp_path / "agent")  # relative to the file
    assert specs[1].model == "/abs/llm" and specs[1].engine.engine == "transformers"
    assert specs[1].engine.max_num_seqs == 4 and specs[1].max_queue == 3 and specs[1].max_concurrency is None
    server, _ = read_serve_config(str(config), {"port": 9500}, extra_models=[])
    assert server.port == 9500  # a flag given beside the file wins


@pytest.mark.parametrize(
    "text, message",
    [
        ("models: []\n", "names no model"),
        ("models:\n  - name: x\n", "needs `model: DIR`"),
        ("models:\n  - model: a\n    colour: red\n", "unknown option(s) ['colour']"),
        ("models:\n  - model: a\n    max_num_seqs: 0\n", "models[0].max_num_seqs"),
        ("prot: 1\nmodels:\n  - model: a\n", "unknown option(s) ['prot']"),
    ],
)
def test_config_mistakes_name_the_entry(tmp_path, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ValueError) as info:
        read_serve_config(str(config), {}, [])
    assert message in str(info.value)


def test_engine_options_beside_a_list_apply_to_every_model_under_its_own():
    from servelm.serving import create_app

    app = create_app(
        [{"model": "/m/a", "name": "a"}, {"model": "/m/b", "name": "b", "engine": {"max_num_seqs": 4}}],
        max_num_seqs=8,
        threads=1,
    )
    models = app.state.servelm.models
    assert (models["a"].engine.max_num_seqs, models["a"].engine.threads) == (8, 1)
    assert (models["b"].engine.max_num_seqs, models["b"].engine.threads) == (4, 1)


def test_two_models_with_the_same_name_are_refused(tmp_path, chat_agent_code):
    from servelm.flavors.pyfunc import save_model

    a, b = tmp_path / "one" / "agent", tmp_path / "two" / "agent"
    save_model(str(a), python_model=chat_agent_code)
    save_model(str(b), python_model=chat_agent_code)
    proc = subprocess.run(CLI + ["serve", "-m", str(a), "-m", str(b)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "two models are named `agent`" in proc.stderr, proc.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_a_two_model_server_from_the_command_line(
    workers, tmp_path, chat_agent_code, tiny_llama_dir, free_port, wait_healthy, wait_until
):
    from servelm.flavors.pyfunc import save_model

    agent = tmp_path / "echo"
    save_model(str(agent), python_model=chat_agent_code)
    argv = ["serve", "-m", str(agent), "-m", f"llm={tiny_llama_dir}", "--port", str(free_port)]
    proc = subprocess.Popen(CLI + argv + ["--workers", str(workers)], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{free_port}"
    logged: list[str] = []
    threading.Thread(target=lambda: logged.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    try:
        wait_healthy(base)
        # every worker has loaded both models (a worker still loading may not take connections yet, so probes
        # through the shared socket can all reach the ready one)
        assert wait_until(lambda: sum(" ready (" in line for line in logged) >= 2 * workers, timeout=300)

        def every_worker_ok() -> bool:  # new connections reach either worker: several answers in a row, all ok
            answers = [httpx.get(f"{base}/health", headers={"connection": "close"}) for _ in range(8 * workers)]
            return all(a.status_code == 200 for a in answers)

        assert wait_until(every_worker_ok, timeout=300)
        health = httpx.get(f"{base}/health").json()
        assert health == {"status": "ok", "models": {"echo": {"status": "ok"}, "llm": {"status": "ok"}}}
        assert [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]] == ["echo", "llm"]
        hi = [{"role": "user", "content": "hi there"}]
        echo = httpx.post(f"{base}/v1/chat/completions", json={"model": "echo", "messages": hi}).json()
        assert echo["choices"][0]["message"]["content"] == "hi there" and echo["model"] == "echo"
        llm = httpx.post(f"{base}/v1/chat/completions", json={"model": "llm", "messages": hi, "max_tokens": 2}).json()
        assert llm["model"] == "llm" and llm["usage"]["completion_tokens"] <= 2
        default = httpx.post(f"{base}/v1/chat/completions", json={"messages": hi}).json()
        assert default["model"] == "echo"  # no model named: the first
        missing = httpx.post(f"{base}/v1/chat/completions", json={"model": "gpt-9", "messages": hi})
        error = missing.json()["error"]
        assert missing.status_code == 404 and error["code"] == "model_not_found" and error["param"] == "model"
        assert "`echo`, `llm`" in error["message"]
        assert httpx.get(f"{base}/v1/models/llm").json()["id"] == "llm"
        invoked = httpx.post(f"{base}/invocations?model=llm", json={"messages": hi, "max_tokens": 2})
        assert invoked.status_code == 200 and invoked.json()[0]["model"] == "llm"
        metrics = httpx.get(f"{base}/metrics").text
        assert 'vllm:num_requests_running{model_name="llm"}' in metrics
    finally:
        proc.terminate()
        proc.wait(60)
