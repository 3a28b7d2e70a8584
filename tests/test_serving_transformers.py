"""The transformers engine behind the server: the openai client, batching, cancellation, errors."""

import threading
import time

import httpx
import pytest

pytest.importorskip("torch")

from openai import OpenAI  # noqa: E402

from conftest import running_server  # noqa: E402
from servelm.flavors.transformers import save_model  # noqa: E402


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory, tiny_llama):
    path = tmp_path_factory.mktemp("llm") / "tiny"
    save_model(tiny_llama, str(path))
    with running_server(str(path), max_num_seqs=32) as (base, app):
        yield base, app


def client(base):
    return OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)


def test_chat_stream_and_usage(llm_server):
    base, _ = llm_server
    c = client(base)
    reply = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0)
    assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0
    assert reply.choices[0].finish_reason in ("length", "stop")
    chunks = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_n_and_seed(llm_server):
    base, _ = llm_server
    c = client(base)
    a = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=6, temperature=1.0, seed=3, n=2)
    b = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=6, temperature=1.0, seed=3, n=2)
    assert len(a.choices) == 2 and [ch.message.content for ch in a.choices] == [ch.message.content for ch in b.choices]


def test_responses_api(llm_server):
    base, _ = llm_server
    response = client(base).responses.create(model="tiny", input="hi", max_output_tokens=5, temperature=0)
    assert response.status == "completed" and response.usage.output_tokens <= 5


def test_concurrent_streams_run_in_one_batch(llm_server):
    base, _ = llm_server
    c = client(base)
    barrier = threading.Barrier(16)
    texts = {}

    def stream(i):
        barrier.wait()
        chunks = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=24, temperature=0, stream=True)
        texts[i] = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(texts) == 16
    metrics = httpx.get(f"{base}/metrics").text
    buckets = {line.split('le="')[1].split('"')[0]: float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("servelm_batch_size_bucket")}
    # steps that ran more than 8 sequences together exist: the 16 streams shared decode steps
    assert buckets["+Inf"] - buckets["8.0"] > 0


def test_disconnect_aborts_the_sequence(llm_server):
    base, app = llm_server
    engine = app.state.servelm.service.engine
    body = {"messages": [{"role": "user", "content": "long"}], "max_tokens": 1500, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=30) as resp:
        lines = resp.iter_lines()
        next(lines)
    deadline = time.monotonic() + 5
    while (engine.has_work() or app.state.servelm.admission.running) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not engine.has_work() and app.state.servelm.admission.running == 0


def test_prompt_over_context_is_400(llm_server):
    base, _ = llm_server
    resp = httpx.post(f"{base}/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 3000}]}, timeout=30)
    assert resp.status_code == 400 and "context" in resp.json()["error"]["message"]


def test_bare_checkpoint_directory_is_served(tiny_llama):
    with running_server(tiny_llama) as (base, _):
        reply = client(base).chat.completions.create(model=tiny_llama.rsplit("/", 1)[-1], messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert reply.usage.completion_tokens <= 3


def test_raw_stream_is_shaped_like_openai(llm_server):
    import json

    from conftest import sse_lines

    base, _ = llm_server
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0, "stream": True, "n": 2,
            "stream_options": {"include_usage": True}}
    lines = sse_lines(base, "/v1/chat/completions", body)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant" and "content" in mine[0]["delta"]
        assert all("role" not in m["delta"] for m in mine[1:])
        assert mine[-1]["finish_reason"] == "length" and all(m["finish_reason"] is None for m in mine[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12


def test_engine_on_a_thread_when_asked(tmp_path, tiny_llama):
    """engine_process=False: the same engine on a thread of the server process."""
    from servelm.serving.engines.thread import ThreadEngine

    with running_server(tiny_llama, engine_process=False) as (base, app):
        assert isinstance(app.state.servelm.service.engine, ThreadEngine)
        reply = client(base).chat.completions.create(model=tiny_llama.rsplit("/", 1)[-1], messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0)
        assert reply.usage.completion_tokens <= 4 and reply.choices[0].finish_reason in ("length", "stop")
