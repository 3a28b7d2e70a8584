"""The python_function face of a transformers-flavor model: OpenAI chat in and out, in a fresh process."""

import json

import pytest

pytest.importorskip("torch")

from servelm.flavors.transformers import save_model  # noqa: E402


def test_pyfunc_chat_in_subprocess(tmp_path, tiny_llama, run_python):
    save_model(tiny_llama, str(tmp_path / "m"))
    out = run_python(f"""
        import json
        from servelm.flavors.pyfunc import load_model
        m = load_model({str(tmp_path / "m")!r})
        req = {{"messages": [{{"role": "user", "content": "hello"}}], "max_tokens": 6, "temperature": 0}}
        one = m.predict(req)
        many = m.predict([req, {{**req, "max_tokens": 3, "n": 2}}])
        chunks = list(m.predict_stream(req))
        print(json.dumps([one, many, chunks]))
    """)
    (one,), many, chunks = json.loads(out)  # a list of one for one request, as MLflow's LLM pyfunc answers
    assert one["object"] == "chat.completion" and one["choices"][0]["finish_reason"] in ("length", "stop")
    assert one["usage"]["prompt_tokens"] > 0 and one["usage"]["completion_tokens"] <= 6
    assert (
        many[0]["choices"][0]["message"]["content"] == one["choices"][0]["message"]["content"]
    )  # batched == alone (greedy)
    assert len(many[1]["choices"]) == 2 and many[1]["usage"]["completion_tokens"] <= 6
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == one["choices"][0]["message"]["content"]
    )
    assert (
        chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        and chunks[-1]["choices"][0]["finish_reason"] is not None
    )


def test_pyfunc_runs_int8_when_its_model_config_asks(tmp_path, tiny_llama):
    from servelm.flavors.pyfunc import load_model

    save_model(tiny_llama, str(tmp_path / "m"), model_config={"quantization": "int8"})
    model = load_model(str(tmp_path / "m"))
    (reply,) = model.predict({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0})
    assert reply["usage"]["completion_tokens"] <= 3
    assert model.get_raw_model().runners().w.int8
