"""An LLM's model_config gives the request defaults (the Phi-3 example's ``max_new_tokens``); without it the
answer is capped at DEFAULT_MAX_TOKENS, not the whole remaining context."""

from servelm.flavors.engine import DEFAULT_MAX_TOKENS


def test_model_config_max_new_tokens_is_the_default(tmp_path, tiny_llama, serve, openai_client):
    from servelm.flavors.transformers import save_model

    save_model(tiny_llama, str(tmp_path / "llm"), model_config={"max_new_tokens": 4, "temperature": 0.0})
    messages = [{"role": "user", "content": "hello"}]
    with serve(str(tmp_path / "llm"), engine_process=False, startup_timeout=600) as (base, _):
        client = openai_client(base)
        first = client.chat.completions.create(model="llm", messages=messages)
        assert first.usage.completion_tokens <= 4
        if first.choices[0].finish_reason == "length":
            assert first.usage.completion_tokens == 4
        again = client.chat.completions.create(model="llm", messages=messages)
        assert again.choices[0].message.content == first.choices[0].message.content  # temperature 0 from model_config
        assert client.chat.completions.create(model="llm", messages=messages, max_tokens=6).usage.completion_tokens <= 6
    assert DEFAULT_MAX_TOKENS == 512
