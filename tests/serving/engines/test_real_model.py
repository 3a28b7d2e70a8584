"""The user-facing behaviour of every engine on a real model, SmolLM2-135M-Instruct: the greedy answer a
new user reads, the same through pyfunc (int8 too), the transformers engine and the onnx engine; the chat template's
system prompt; stop strings; n choices and seeds; a forced tool call."""

import json

import pytest

pytest.importorskip("torch")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = "The capital of France is Paris."


@pytest.fixture(scope="module")
def transformers_server(serve, smollm2_checkpoint):
    with serve(smollm2_checkpoint, served_model_name="smol", dtype="float32", startup_timeout=600) as (base, _):
        yield base


@pytest.fixture(scope="module")
def onnx_server(serve, smollm2_genai):
    with serve(smollm2_genai, served_model_name="smol", startup_timeout=600) as (base, _):
        yield base


def test_pyfunc_answers_the_question(tmp_path_factory, smollm2_checkpoint):
    from servelm.flavors.pyfunc import load_model
    from servelm.flavors.transformers import save_model

    path = str(tmp_path_factory.mktemp("smol") / "smol")
    save_model(smollm2_checkpoint, path, model_config={"dtype": "float32"})
    (reply,) = load_model(path).predict({"messages": QUESTION, "temperature": 0, "max_tokens": 30})  # a list of one
    # int8's greedy answer differs from bf16's by design, and between CPUs' int8 kernels (7-bit activations
    # without VNNI): right, not word for word ("Bonjour, the capital of France is Paris." on an AVX2 path)
    assert "capital of France is Paris" in reply["choices"][0]["message"]["content"]


def test_int8_answers_the_question_too(tmp_path_factory, smollm2_checkpoint):
    import torch

    from servelm.flavors.engine.runners.int8_linear import int8_unavailable_reason
    from servelm.flavors.pyfunc import load_model
    from servelm.flavors.transformers import save_model

    if int8_unavailable_reason(torch.device("cpu")):
        pytest.skip("no fbgemm int8 kernels in this torch")
    path = str(tmp_path_factory.mktemp("smol-int8") / "smol")
    save_model(smollm2_checkpoint, path, model_config={"quantization": "int8"})
    (reply,) = load_model(path).predict({"messages": QUESTION, "temperature": 0, "max_tokens": 30})  # a list of one
    # int8's greedy answer differs from bf16's by design, and between CPUs' int8 kernels (7-bit activations
    # without VNNI): right, not word for word ("Bonjour, the capital of France is Paris." on an AVX2 path)
    assert "capital of France is Paris" in reply["choices"][0]["message"]["content"]


@pytest.mark.parametrize("engine", ["transformers", "onnx"])
def test_each_engine_gives_the_same_greedy_answer(request, engine, openai_client):
    base = request.getfixturevalue(f"{engine}_server")
    client = openai_client(base)
    reply = client.chat.completions.create(model="smol", messages=QUESTION, temperature=0, max_tokens=30)
    assert reply.choices[0].message.content == ANSWER and reply.choices[0].finish_reason == "stop"
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="smol", messages=QUESTION, temperature=0, max_tokens=30, stream=True
        )
        if c.choices
    )
    assert streamed == ANSWER


def test_the_chat_template_puts_a_system_prompt_first(transformers_server, openai_client):
    client = openai_client(transformers_server)
    default = client.chat.completions.create(model="smol", messages=QUESTION, temperature=0, max_tokens=1)
    own = client.chat.completions.create(
        model="smol",
        messages=[{"role": "system", "content": "Answer in one word."}] + QUESTION,
        temperature=0,
        max_tokens=10,
    )
    assert own.usage.prompt_tokens < default.usage.prompt_tokens  # SmolLM2's own default system prompt is longer
    assert "Paris" in own.choices[0].message.content


@pytest.mark.parametrize("engine", ["transformers", "onnx"])
def test_stop_strings_n_and_seeds(request, engine, openai_client):
    client = openai_client(request.getfixturevalue(f"{engine}_server"))
    cut = client.chat.completions.create(model="smol", messages=QUESTION, temperature=0, max_tokens=30, stop=["Paris"])
    assert cut.choices[0].message.content == "The capital of France is " and cut.choices[0].finish_reason == "stop"
    ask = dict(
        model="smol",
        messages=[{"role": "user", "content": "Write a sentence about the sea."}],
        temperature=1.0,
        max_tokens=20,
        n=2,
        seed=7,
    )
    first, again = client.chat.completions.create(**ask), client.chat.completions.create(**ask)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert first.choices[0].message.content != first.choices[1].message.content  # each choice its own seed


def test_a_forced_tool_call_from_the_real_model(transformers_server, openai_client):
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    client = openai_client(transformers_server)
    reply = client.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[tool],
        tool_choice="required",
        temperature=0,
        max_tokens=60,
    )
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "Paris"
