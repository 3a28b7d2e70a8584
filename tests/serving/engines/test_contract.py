"""What every LLM engine behind the server does the same, through the official openai client: greedy chat
and its stream (usage included), n choices, reproducible seeds, stop strings, text completions, the
Responses API, streams shaped like OpenAI's, concurrent streams sharing steps, a disconnect freeing the
row, prompts past the context refused.

One suite, parametrized over the engines: ``transformers`` (in its engine process, the default),
``transformers-thread`` (``engine_process=False``: on a thread of the server), ``onnx`` and ``llamacpp`` (the tiny
Llama written as a GGUF file). Engine-specific
behaviour lives beside it (test_process.py; the vLLM engine, in its own venv, in test_vllm.py).
"""

import threading
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

pytest.importorskip("torch")


@dataclass
class Served:
    """One engine serving the tiny Llama as model ``tiny``."""

    engine: str
    base: str
    app: Any
    shared_steps: float  # a batch-size bucket that concurrent streams' steps must exceed


ENGINES = ["transformers", "transformers-thread", "onnx", "llamacpp"]


@pytest.fixture(scope="module", params=ENGINES)
def llm(request, serve):
    """The engine named by the parameter, serving on loopback (one at a time: pytest groups the tests by engine)."""
    engine = request.param
    if engine == "onnx":
        pytest.importorskip("onnxruntime_genai")
        path, options, shared_steps = request.getfixturevalue("tiny_onnx_dir"), {}, 1.0
    elif engine == "llamacpp":
        path, options, shared_steps = request.getfixturevalue("tiny_gguf_dir"), {"max_model_len": 4096}, 1.0
    else:
        path, options, shared_steps = (
            request.getfixturevalue("tiny_llama_dir"),
            {"engine_process": engine == "transformers"},
            8.0,
        )
    with serve(path, max_num_seqs=32, **options) as (base, app):
        yield Served(engine, base, app, shared_steps)


@pytest.fixture
def client(llm, openai_client):
    return openai_client(llm.base)


def batch_buckets(base):
    """The cumulative ``servelm_batch_size`` histogram buckets: upper bound -> steps."""
    metrics = httpx.get(f"{base}/metrics").text
    return {
        line.split('le="')[1].split('"')[0]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("servelm_batch_size_bucket")
    }


def test_the_engine_asked_for_serves(llm):
    from servelm.serving.engines.process import ProcessEngine
    from servelm.serving.engines.thread import ThreadEngine

    service = llm.app.state.servelm.service
    from servelm.serving.engines.llamacpp import LlamaCppEngine

    kind, engine_class = {
        "transformers": ("transformers engine", ProcessEngine),
        "transformers-thread": ("transformers engine", ThreadEngine),
        "onnx": ("onnx engine on cpu", ProcessEngine),
        "llamacpp": ("llamacpp engine", LlamaCppEngine),
    }[llm.engine]
    assert kind in service.kind and isinstance(service.engine, engine_class)


def test_chat_stream_and_usage(client):
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0
    )
    assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0
    assert reply.choices[0].finish_reason in ("length", "stop")
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_n_and_seed(client):
    ask = dict(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=6, temperature=1.0, seed=3, n=2)
    a, b = client.chat.completions.create(**ask), client.chat.completions.create(**ask)
    assert len(a.choices) == 2 and [ch.message.content for ch in a.choices] == [ch.message.content for ch in b.choices]


def test_stop_string_and_ignore_eos(client):
    ask = dict(
        model="tiny",
        messages=[{"role": "user", "content": "y"}],
        max_tokens=16,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    full = client.chat.completions.create(**ask)
    assert full.usage.completion_tokens == 16
    text = full.choices[0].message.content
    stop = text[3:5]
    cut = client.chat.completions.create(**ask, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == text[: text.index(stop)]


def test_text_completions_and_their_stream(client):
    ask = dict(model="tiny", prompt="the model", max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    reply = client.completions.create(**ask)
    assert reply.object == "text_completion" and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 6 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    chunks = list(client.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == reply.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    two = client.completions.create(
        model="tiny", prompt=["a", "b"], max_tokens=3, temperature=0, n=2, extra_body={"ignore_eos": True}
    )
    assert len(two.choices) == 4 and two.usage.completion_tokens == 12


def test_responses_api_and_its_stream(client):
    """An answer cut by max_output_tokens is incomplete, as OpenAI reports it (ignore_eos: it is cut)."""
    response = client.responses.create(
        model="tiny", input="hi", max_output_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    assert (
        response.status == "incomplete"
        and response.incomplete_details.reason == "max_output_tokens"
        and response.usage.output_tokens == 5
    )
    events = [
        e.type
        for e in client.responses.create(
            model="tiny", input="hi", max_output_tokens=5, temperature=0, stream=True, extra_body={"ignore_eos": True}
        )
    ]
    assert events[0] == "response.created" and events[-1] == "response.incomplete"
    whole = client.responses.create(model="tiny", input="hi", max_output_tokens=200, temperature=0)
    assert whole.usage.output_tokens < 200 or whole.status == "incomplete"


def test_responses_include_values(client, llm):
    """Logprobs are given when included; the values for hosted tools, reasoning and input images are
    answered by their absence; anything else is a 400 naming ``include``."""
    import openai

    response = client.responses.create(
        model="tiny",
        input="hi",
        max_output_tokens=3,
        temperature=0,
        include=["message.output_text.logprobs", "reasoning.encrypted_content", "file_search_call.results"],
    )
    text = response.output[-1].content[0]
    if llm.engine == "llamacpp":  # llama.cpp's stream leaves out a token that is not valid UTF-8 on its own
        assert 0 < len(text.logprobs) <= response.usage.output_tokens
    else:
        assert len(text.logprobs) == response.usage.output_tokens
    assert not any(item.type == "reasoning" for item in response.output)
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model="tiny", input="hi", max_output_tokens=3, include=["message.output_text.spelling"])
    assert error.value.body["param"] == "include" and "spelling" in error.value.body["message"]


def test_raw_stream_is_shaped_like_openai(llm, sse_lines):
    import json

    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "n": 2,
        "stream_options": {"include_usage": True},
    }
    lines = sse_lines(llm.base, "/v1/chat/completions", body)
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


def test_concurrent_streams_share_steps(llm, client):
    before = batch_buckets(llm.base)
    barrier = threading.Barrier(16)
    texts = {}

    def stream(i):
        barrier.wait()
        chunks = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": f"question {i}"}],
            max_tokens=24,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        texts[i] = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(texts) == 16
    if llm.engine == "llamacpp":  # llama.cpp counts it itself: slots busy per decode call, on average
        assert llm.app.state.servelm.service.engine.metrics()["llamacpp:n_busy_slots_per_decode"] > 1
        return
    after = batch_buckets(llm.base)
    # steps that ran more than ``shared_steps`` sequences together happened: the streams shared engine steps
    bucket = f"{llm.shared_steps:.1f}"
    assert (after["+Inf"] - after[bucket]) - (before["+Inf"] - before[bucket]) > 0


def test_disconnect_frees_the_row(llm, wait_until):
    engine = llm.app.state.servelm.service.engine
    admission = llm.app.state.servelm.admission
    body = {
        "messages": [{"role": "user", "content": "long"}],
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    with httpx.stream("POST", f"{llm.base}/v1/chat/completions", json=body, timeout=120) as resp:
        lines = resp.iter_lines()
        next(lines)
    wait_until(lambda: not engine.has_work() and not admission.running)
    assert not engine.has_work() and admission.running == 0


def test_prompt_over_context_is_400(llm):
    resp = httpx.post(
        f"{llm.base}/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 3000}]}, timeout=120
    )
    assert resp.status_code == 400 and "context" in resp.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("max_tokens", [10_000_000, 1e20])
def test_max_tokens_past_the_context_is_400_before_any_stream(llm, stream, max_tokens):
    body = {"messages": ASK, "max_tokens": max_tokens, "stream": stream}
    resp = httpx.post(f"{llm.base}/v1/chat/completions", json=body, timeout=120)
    assert resp.status_code == 400 and resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"]["param"] == "max_tokens"


# ---------------------------------------------------------------------------------------------- LLMs driving agents
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
# llama.cpp (unlike servelm's own engines) does not steer a constrained answer to close near its token limit: a
# random model fills an unbounded string until max_tokens there, so its calls get a bounded one
WEATHER_BOUNDED = {
    "type": "function",
    "function": {
        **WEATHER["function"],
        "parameters": {
            **WEATHER["function"]["parameters"],
            "properties": {"city": {"type": "string", "maxLength": 16}},
        },
    },
}
PLACE = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 16}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def strict_chunks(llm, body, sse_lines):
    """The raw chat stream, each chunk validated by the openai client's own type."""
    import json

    from openai.types.chat import ChatCompletionChunk

    lines = sse_lines(llm.base, "/v1/chat/completions", {**body, "stream": True})
    assert lines[-1] == "data: [DONE]"
    return [ChatCompletionChunk.model_validate(json.loads(line[6:])) for line in lines[:-1]]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_a_forced_tool_call_is_a_valid_call(client, llm, sse_lines, choice):
    import json

    weather = WEATHER_BOUNDED if llm.engine == "llamacpp" else WEATHER

    reply = client.chat.completions.create(
        model="tiny", messages=ASK, tools=[weather], tool_choice=choice, temperature=0, max_tokens=150
    )
    (call,) = reply.choices[0].message.tool_calls
    assert (
        reply.choices[0].finish_reason == "tool_calls"
        and call.function.name == "get_weather"
        and call.id.startswith("call_")
    )
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    chunks = strict_chunks(
        llm,
        {
            "model": "tiny",
            "messages": ASK,
            "tools": [weather],
            "tool_choice": choice,
            "temperature": 0,
            "max_tokens": 150,
        },
        sse_lines,
    )
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert (
        deltas[0].id.startswith("call_") and deltas[0].function.name == "get_weather" and deltas[0].type == "function"
    )
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in deltas[1:])
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments  # greedy: the same call
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_results_go_back_through_the_template(client):
    first = client.chat.completions.create(
        model="tiny", messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=150
    )
    call = first.choices[0].message
    history = ASK + [
        call.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "Sunny, 25 C"},
    ]
    follow = client.chat.completions.create(
        model="tiny", messages=history, tools=[WEATHER], temperature=0, max_tokens=8
    )
    assert follow.choices[0].message.content and not follow.choices[0].message.tool_calls
    assert follow.usage.prompt_tokens > first.usage.prompt_tokens + 20  # the call and its result are in the prompt
    without_tools = client.chat.completions.create(
        model="tiny", messages=history, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=8
    )
    assert without_tools.usage.prompt_tokens < follow.usage.prompt_tokens  # tool_choice none: the tools are not offered


def test_structured_output_always_parses(client):
    import json

    for temperature in (0, 1.0):
        reply = client.chat.completions.create(
            model="tiny",
            messages=ASK,
            temperature=temperature,
            seed=1,
            max_tokens=150,
            response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": PLACE, "strict": True}},
        )
        value = json.loads(reply.choices[0].message.content)
        assert set(value) == {"city", "population"} and isinstance(value["population"], int)
    anything = client.chat.completions.create(
        model="tiny", messages=ASK, temperature=1.0, seed=2, max_tokens=100, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(anything.choices[0].message.content), dict)


def test_logprobs_in_chat_and_completions(client, llm, sse_lines):
    import math

    reply = client.chat.completions.create(
        model="tiny",
        messages=ASK,
        temperature=0,
        max_tokens=5,
        logprobs=True,
        top_logprobs=3,
        extra_body={"ignore_eos": True},
    )
    entries = reply.choices[0].logprobs.content
    assert len(entries) == 5 and "".join(e.token for e in entries) == reply.choices[0].message.content
    for entry in entries:
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        assert entry.logprob <= 0 and math.isclose(
            entry.logprob, entry.top_logprobs[0].logprob, rel_tol=1e-4
        )  # greedy: the top one
        assert bytes(entry.bytes).decode(errors="replace") == entry.token
    chunks = strict_chunks(
        llm,
        {"model": "tiny", "messages": ASK, "temperature": 0, "max_tokens": 5, "logprobs": True, "ignore_eos": True},
        sse_lines,
    )
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in entries]
    text = client.completions.create(
        model="tiny", prompt="hello", max_tokens=4, temperature=0, logprobs=2, extra_body={"ignore_eos": True}
    )
    lp = text.choices[0].logprobs
    assert (
        len(lp.tokens) == 4
        and len(lp.top_logprobs[0]) == 2
        and lp.text_offset[0] == 0
        and "".join(lp.tokens) == text.choices[0].text
    )
    for stream in (False, True):  # the prompt's log-probabilities are not computed: refused, never left out
        body = {"model": "tiny", "prompt": "hello", "max_tokens": 2, "logprobs": 1, "echo": True, "stream": stream}
        refused = httpx.post(f"{llm.base}/v1/completions", json=body, timeout=120)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "echo", refused.text


def test_logit_bias_and_penalties_are_applied(client):
    plain = client.chat.completions.create(
        model="tiny", messages=ASK, temperature=0, max_tokens=4, logprobs=True, extra_body={"ignore_eos": True}
    )
    first = plain.choices[0].logprobs.content[0]
    banned = client.chat.completions.create(
        model="tiny",
        messages=ASK,
        temperature=0,
        max_tokens=4,
        logprobs=True,
        top_logprobs=1,
        extra_body={"ignore_eos": True},
        logit_bias={str(_token_id(client, first.token)): -100},
    )
    assert banned.choices[0].logprobs.content[0].token != first.token
    repeated = client.chat.completions.create(
        model="tiny",
        messages=ASK,
        temperature=0,
        max_tokens=30,
        frequency_penalty=2.0,
        presence_penalty=2.0,
        logprobs=True,
        extra_body={"ignore_eos": True},
    )
    tokens = [e.token for e in repeated.choices[0].logprobs.content]
    assert len(set(tokens)) >= 20  # penalties keep a greedy random model from looping over the same few tokens


def _token_id(client, text):
    """The id of the tiny model's token for ``text``."""
    from transformers import AutoTokenizer

    from servelm.flavors.transformers import tiny_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("llama"))
    return tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))[0]


def test_responses_function_calls_and_structured_text(client, llm):
    import json

    import httpx
    from openai.types.responses import Response, ResponseStreamEvent
    from pydantic import TypeAdapter

    weather = WEATHER_BOUNDED if llm.engine == "llamacpp" else WEATHER
    tool = {"type": "function", "name": "get_weather", "parameters": weather["function"]["parameters"]}
    body = {
        "model": "tiny",
        "input": "Weather in Paris?",
        "tools": [tool],
        "tool_choice": "required",
        "temperature": 0,
        "max_output_tokens": 150,
    }
    response = Response.model_validate(httpx.post(f"{llm.base}/v1/responses", json=body, timeout=300).json())
    (call,) = response.output
    assert (
        call.type == "function_call"
        and call.name == "get_weather"
        and json.loads(call.arguments)
        and response.tools[0].name == "get_weather"
    )
    with httpx.stream("POST", f"{llm.base}/v1/responses", json={**body, "stream": True}, timeout=300) as streamed:
        events = [
            TypeAdapter(ResponseStreamEvent).validate_python(json.loads(line[6:]))
            for line in streamed.iter_lines()
            if line.startswith("data: ")
        ]
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == call.arguments
    structured = client.responses.create(
        model="tiny",
        input="A place?",
        temperature=0,
        max_output_tokens=150,
        text={"format": {"type": "json_schema", "name": "place", "schema": PLACE, "strict": True}},
    )
    assert set(json.loads(structured.output_text)) == {"city", "population"}


def test_sampling_extremes_are_run_or_refused_by_name(llm, client):
    """What vLLM does with sampling values at the edges: a temperature below 1e-5 samples greedily, a top_k
    past any vocabulary keeps every token; a seed no 64-bit generator takes and token ids outside the
    vocabulary are 400s naming the field. None of them reaches (or breaks) the engine's step."""
    greedy = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=6, temperature=0)
    for extreme in ({"temperature": 1e-45}, {"temperature": 1e-45, "seed": 3}, {"temperature": 1e-45, "top_k": 10**19}):
        reply = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=6, extra_body=extreme)
        assert reply.choices[0].message.content == greedy.choices[0].message.content, extreme
    for body, param in (
        ({"messages": ASK, "seed": 2**64}, "seed"),
        ({"messages": ASK, "seed": -(2**63) - 1}, "seed"),
    ):
        refused = httpx.post(f"{llm.base}/v1/chat/completions", json={"model": "tiny", **body}, timeout=120)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text
    for prompt in ([1, 2, -5], [1, 2, 10**9]):
        for stream in (False, True):
            body = {"model": "tiny", "prompt": prompt, "max_tokens": 2, "stream": stream}
            refused = httpx.post(f"{llm.base}/v1/completions", json=body, timeout=120)
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "prompt", refused.text
    assert client.chat.completions.create(model="tiny", messages=ASK, max_tokens=2, seed=-1).choices


def test_one_request_is_bounded_before_any_work(llm):
    """A request that would start more sequences than --max-request-sequences (256), or whose text could never
    fit the context, is a 400 naming the field, answered at once (nothing is tokenized or queued)."""
    body = {"model": "tiny", "prompt": ["hi"] * 100, "n": 3, "max_tokens": 1}
    refused = httpx.post(f"{llm.base}/v1/completions", json=body, timeout=120)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "prompt", refused.text
    assert "256" in refused.json()["error"]["message"]
    chats = [{"messages": ASK, "max_tokens": 1}] * 300
    refused = httpx.post(f"{llm.base}/invocations", json={"instances": chats}, timeout=120)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "inputs", refused.text
    huge = {"model": "tiny", "messages": [{"role": "user", "content": "word " * 2_000_000}], "max_tokens": 1}
    refused = httpx.post(f"{llm.base}/v1/chat/completions", json=huge, timeout=120)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded", refused.text
    assert httpx.get(f"{llm.base}/health", timeout=120).status_code == 200


def test_an_image_to_a_text_only_model_is_400_naming_the_part(llm):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]}
    refused = httpx.post(f"{llm.base}/v1/chat/completions", json=body, timeout=120)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "messages.0.content.1", refused.text
    text_parts = {**body, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 2}
    assert httpx.post(f"{llm.base}/v1/chat/completions", json=text_parts, timeout=120).status_code == 200
