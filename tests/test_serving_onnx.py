"""The onnxruntime-genai engine behind the server: the openai client, batching, cancellation, errors."""

import threading
import time

import httpx
import pytest

pytest.importorskip("onnxruntime_genai")
pytest.importorskip("torch")

from openai import OpenAI  # noqa: E402

from conftest import running_server  # noqa: E402
from servelm.flavors.onnx import save_model  # noqa: E402
from servelm.serving.services.loading import choose_engine  # noqa: E402


@pytest.fixture(scope="module")
def onnx_server(tmp_path_factory, tiny_llama_genai):
    path = tmp_path_factory.mktemp("onnx-serve") / "tiny"
    save_model(tiny_llama_genai, str(path))
    with running_server(str(path), max_num_seqs=32) as (base, app):
        yield base, app


def client(base):
    return OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)


def test_engine_is_chosen_by_flavor(onnx_server, tiny_llama_genai):
    _, app = onnx_server
    assert "onnxruntime-genai engine on cpu" in app.state.servelm.service.kind
    assert choose_engine(tiny_llama_genai, None) == "onnx"


def test_chat_stream_and_usage(onnx_server):
    base, _ = onnx_server
    c = client(base)
    reply = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0)
    assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0
    chunks = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_n_seed_and_stop(onnx_server):
    c = client(onnx_server[0])
    ask = dict(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=6, temperature=1.0, seed=3, n=2)
    a, b = c.chat.completions.create(**ask), c.chat.completions.create(**ask)
    assert len(a.choices) == 2 and [ch.message.content for ch in a.choices] == [ch.message.content for ch in b.choices]
    full = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "y"}], max_tokens=16, temperature=0).choices[0].message.content
    stop = full[3:5]
    cut = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "y"}], max_tokens=16, temperature=0, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == full[: full.index(stop)]


def test_responses_api_streams(onnx_server):
    c = client(onnx_server[0])
    response = c.responses.create(model="tiny", input="hi", max_output_tokens=5, temperature=0)
    assert response.status == "completed" and response.usage.output_tokens <= 5
    events = [e.type for e in c.responses.create(model="tiny", input="hi", max_output_tokens=5, temperature=0, stream=True)]
    assert events[0] == "response.created" and events[-1] == "response.completed"


def test_concurrent_streams_run_in_one_batch(onnx_server):
    base, _ = onnx_server
    c = client(base)
    before = _batch_buckets(base)
    barrier = threading.Barrier(16)
    texts = {}

    def stream(i):
        barrier.wait()
        chunks = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=24, temperature=0,
                                           stream=True, extra_body={"ignore_eos": True})
        texts[i] = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(texts) == 16
    after = _batch_buckets(base)
    # steps that produced tokens for more than one stream happened: the streams shared Engine steps
    assert (after["+Inf"] - after["1.0"]) - (before["+Inf"] - before["1.0"]) > 0


def _batch_buckets(base):
    metrics = httpx.get(f"{base}/metrics").text
    return {line.split('le="')[1].split('"')[0]: float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("servelm_batch_size_bucket")}


def test_disconnect_aborts_the_request(onnx_server):
    base, app = onnx_server
    engine = app.state.servelm.service.engine
    body = {"messages": [{"role": "user", "content": "long"}], "max_tokens": 1900, "temperature": 0, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=30) as resp:
        lines = resp.iter_lines()
        next(lines)
    deadline = time.monotonic() + 5
    while (engine.has_work() or app.state.servelm.admission.running) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not engine.has_work() and app.state.servelm.admission.running == 0


def test_prompt_over_context_is_400(onnx_server):
    resp = httpx.post(f"{onnx_server[0]}/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 3000}]}, timeout=30)
    assert resp.status_code == 400 and "context" in resp.json()["error"]["message"]


def test_bare_genai_folder_is_served(tiny_llama_genai):
    with running_server(tiny_llama_genai) as (base, _):
        reply = client(base).chat.completions.create(model=tiny_llama_genai.rsplit("/", 1)[-1], messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert reply.usage.completion_tokens <= 3
