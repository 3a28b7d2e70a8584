"""The python_function face of an onnx-flavor model: OpenAI chat in and out, with greedy parity against
the transformers flavor of the same checkpoint, streaming, stop strings, seeds, n and token limits."""

import pytest

pytest.importorskip("onnxruntime_genai")
pytest.importorskip("torch")

from servelm.flavors.pyfunc import load_model as load_pyfunc  # noqa: E402


def test_pyfunc_chat_matches_transformers_greedy(onnx_dir, transformers_pyfunc, chat_request):
    model = load_pyfunc(onnx_dir)
    (ours,), (theirs,) = model.predict(chat_request), transformers_pyfunc.predict(chat_request)
    assert ours["choices"][0]["message"]["content"] == theirs["choices"][0]["message"]["content"]
    assert ours["usage"] == theirs["usage"] and ours["choices"][0]["finish_reason"] == "length"


def test_a_list_of_requests_is_one_batch_with_parity(onnx_dir, transformers_pyfunc):
    requests = [
        {"messages": [{"role": "user", "content": f"q {i} " * (i + 1)}], "max_tokens": 12, "temperature": 0}
        for i in range(6)
    ]
    ours = [r["choices"][0]["message"]["content"] for r in load_pyfunc(onnx_dir).predict(requests)]
    theirs = [r["choices"][0]["message"]["content"] for r in transformers_pyfunc.predict(requests)]
    assert ours == theirs


def test_predict_stream_yields_chat_chunks(onnx_dir, chat_request):
    model = load_pyfunc(onnx_dir)
    chunks = list(model.predict_stream({**chat_request, "max_tokens": 6}))
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        == model.predict({**chat_request, "max_tokens": 6})[0]["choices"][0]["message"]["content"]
    )


def test_stop_strings_seed_n_and_defaults(onnx_dir, chat_request):
    model = load_pyfunc(onnx_dir)
    full = model.predict(chat_request)[0]["choices"][0]["message"]["content"]
    stop = full.split(" ")[1][:2]
    cut = model.predict({**chat_request, "stop": [stop]})[0]["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["message"]["content"] == full[: full.index(stop)]
    sampled = {**chat_request, "temperature": 0.9, "top_p": 0.9, "top_k": 20, "seed": 7, "n": 2}
    (a,), (b,) = model.predict(sampled), model.predict(sampled)
    assert [c["message"]["content"] for c in a["choices"]] == [c["message"]["content"] for c in b["choices"]]
    assert a["choices"][0]["message"]["content"] != a["choices"][1]["message"]["content"]
    assert (
        model.predict({"messages": chat_request["messages"], "temperature": 0})[0]["usage"]["completion_tokens"] == 40
    )  # model_config max_tokens


def test_ignore_eos_and_max_length(onnx_dir, chat_request):
    model = load_pyfunc(onnx_dir)
    (reply,) = model.predict({**chat_request, "max_tokens": 300, "temperature": 1.0, "ignore_eos": True})
    assert reply["usage"]["completion_tokens"] == 300 and reply["choices"][0]["finish_reason"] == "length"


def test_prompt_with_the_pad_id_is_generated_as_given(onnx_dir, transformers_pyfunc):
    # the pad token is a real token here (the user typed it): neither flavor may mask it out
    request = {
        "messages": [{"role": "user", "content": "<|endoftext|> hello <|endoftext|>"}],
        "max_tokens": 10,
        "temperature": 0,
    }
    assert (
        load_pyfunc(onnx_dir).predict(request)[0]["choices"][0]["message"]["content"]
        == transformers_pyfunc.predict(request)[0]["choices"][0]["message"]["content"]
    )
