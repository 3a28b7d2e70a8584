"""Request defaults from the model: model_config over generation_config, then a bounded cap (OpenAI's habit)."""

import json

from servelm.agents import ChatCompletionRequest
from servelm.flavors.engine import DEFAULT_MAX_TOKENS, generation_defaults, sampling_params

HI = {"messages": [{"role": "user", "content": "hi"}]}


def test_model_config_gives_the_defaults():
    request = ChatCompletionRequest.model_validate(HI)
    params = sampling_params(request, 10, 2048, {"max_new_tokens": 5, "temperature": 0.2, "top_p": 0.9, "top_k": 7})
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k) == (5, 0.2, 0.9, 7)
    assert sampling_params(request, 10, 2048, {"max_tokens": 9}).max_tokens == 9
    asked = ChatCompletionRequest.model_validate({**HI, "max_tokens": 3, "temperature": 1.0})
    assert (
        sampling_params(asked, 10, 2048, {"max_new_tokens": 5, "temperature": 0.2}).max_tokens,
        sampling_params(asked, 10, 2048, {}).temperature,
    ) == (3, 1.0)


def test_without_defaults_the_cap_is_bounded_not_the_whole_context():
    request = ChatCompletionRequest.model_validate(HI)
    assert sampling_params(request, 31, 2048).max_tokens == DEFAULT_MAX_TOKENS == 512
    assert sampling_params(request, 2000, 2048).max_tokens == 48  # and never past the context


def test_generation_config(tmp_path):
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"max_new_tokens": 64, "temperature": 0.6, "top_p": 0.95, "do_sample": True, "eos_token_id": 2})
    )
    assert generation_defaults(str(tmp_path)) == {"max_new_tokens": 64, "temperature": 0.6, "top_p": 0.95}
    assert generation_defaults(str(tmp_path / "none")) == {}
