"""Int8 linear layers: close to the float product, and a runner built on them steps like the bf16 one."""

import pytest

torch = pytest.importorskip("torch")

from servelm.flavors.engine.fixed_rows import FixedRows  # noqa: E402
from servelm.flavors.engine.runners.int8_linear import int8_linear, int8_unavailable_reason, pack_int8  # noqa: E402
from servelm.flavors.engine.runners.llama import LlamaWeights, TorchRunner  # noqa: E402

pytestmark = pytest.mark.skipif(
    int8_unavailable_reason(torch.device("cpu")) is not None, reason="no fbgemm int8 kernels in this torch"
)


@pytest.mark.parametrize("tokens", [1, 16, 250])
def test_int8_product_is_close_to_the_float_one(tokens):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=generator) * 0.05  # [out, in]
    bias = torch.randn(96, generator=generator)
    x = torch.randn(tokens, 64, generator=generator)  # [tokens, in]
    expected = torch.nn.functional.linear(x, weight, bias)
    got = int8_linear(x.bfloat16(), pack_int8(weight, bias), torch.bfloat16)
    assert got.dtype == torch.bfloat16 and got.shape == (tokens, 96)
    error = (got.float() - expected).norm() / expected.norm()
    assert error < 0.03


def test_an_int8_runner_steps_like_the_bf16_one(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).eval()

    def logits(weights: LlamaWeights):
        runner = FixedRows(TorchRunner(weights), 2, 64)
        runner.forward([], [], [(0, list(range(3, 40)), 0)])
        return runner.forward([7], [37], [(1, list(range(50, 60)), 0)]).float()  # [2, vocab]

    plain, quantized = logits(LlamaWeights(model, torch.bfloat16)), logits(LlamaWeights(model, torch.bfloat16, "int8"))
    assert quantized.shape == plain.shape
    similarity = torch.nn.functional.cosine_similarity(quantized, plain, dim=-1)
    assert bool((similarity > 0.98).all()), similarity


def test_unknown_quantization_is_refused(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).eval()
    with pytest.raises(ValueError, match="int8"):
        LlamaWeights(model, torch.bfloat16, "int4")


def test_int8_needs_the_cpu():
    assert "CPU" in (int8_unavailable_reason(torch.device("cuda")) or "")


def test_down_projections_and_the_cache_stay_in_the_model_dtype(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).eval()
    weights = LlamaWeights(model, torch.bfloat16, "int8")
    for layer in weights.layers:
        assert all(isinstance(layer[name][0], torch.ScriptObject) for name in ("qkv", "o", "gate_up"))
        assert not isinstance(layer["down"][0], torch.ScriptObject)
    assert isinstance(weights.lm_head[0], torch.ScriptObject)
    runner = TorchRunner(weights)
    runner.allocate(1, 32, 1)
    assert runner.keys[0].dtype == runner.values[0].dtype == torch.bfloat16
