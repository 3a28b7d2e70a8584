"""The skinny linear kernel: the same product as torch's for every shape it may meet, and the fp32 runner takes it
only for steps within its window."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

from servelm.flavors.engine.fixed_rows import FixedRows  # noqa: E402
from servelm.flavors.engine.runners import skinny_linear as skinny_module  # noqa: E402
from servelm.flavors.engine.runners.llama import LlamaWeights, TorchRunner  # noqa: E402
from servelm.flavors.engine.runners.skinny_linear import skinny_kernel, skinny_linear, skinny_window  # noqa: E402

kernel = skinny_kernel()
pytestmark = pytest.mark.skipif(kernel is None, reason="the skinny kernel runs on x86 CPUs with numba")


@pytest.mark.parametrize("tokens", [1, 2, 3, 8, 17, 32])
@pytest.mark.parametrize("outputs", [4, 7, 96, 1001])  # whole fours and rows left over
@pytest.mark.parametrize("bias", [False, True])
def test_the_kernel_computes_torchs_product(tokens, outputs, bias):
    generator = torch.Generator().manual_seed(tokens * outputs)
    weight = torch.randn(outputs, 72, generator=generator)  # [out, in]
    b = torch.randn(outputs, generator=generator) if bias else None
    x = torch.randn(tokens, 72, generator=generator)  # [tokens, in]
    got = skinny_linear(kernel, x, weight, b)
    assert got.shape == (tokens, outputs) and got.dtype == torch.float32
    torch.testing.assert_close(got, torch.nn.functional.linear(x, weight, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tokens", [1, 2, 5])
def test_the_steps_around_a_product_are_the_models_own(tokens):
    """RMS norm before, silu(gate) * up before, bias and residual after: as the model's modules compute them."""
    generator = torch.Generator().manual_seed(tokens)
    weight = torch.randn(22, 40, generator=generator)  # [out, in]
    bias, norm = torch.randn(22, generator=generator), torch.rand(40, generator=generator) + 0.5
    residual = torch.randn(tokens, 22, generator=generator)
    x = torch.randn(tokens, 40, generator=generator) * 3
    normed = torch.nn.functional.rms_norm(x, (40,), norm, 1e-5)
    got = skinny_linear(kernel, x, weight, bias, norm=norm, eps=1e-5, residual=residual)
    expected = residual + torch.nn.functional.linear(normed, weight, bias)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    gate_up = torch.randn(tokens, 80, generator=generator) * 4  # [tokens, 2 * in]: gate, then up
    gate, up = gate_up.chunk(2, dim=-1)
    got = skinny_linear(kernel, gate_up, weight, gated=True)
    expected = torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, weight)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_non_contiguous_input_is_read_as_its_values():
    x = torch.randn(8, 64).t()  # [8, 64] viewed as [64, 8]: not contiguous
    weight = torch.randn(12, 8)
    torch.testing.assert_close(skinny_linear(kernel, x, weight, None), x @ weight.t(), rtol=1e-5, atol=1e-5)


def test_the_window_depends_on_avx512(monkeypatch):
    monkeypatch.setenv("SERVELM_CPU_FEATURES_OFF", "avx512")
    assert skinny_window() == skinny_module.SKINNY_WINDOWS["avx2"]
    monkeypatch.setenv("SERVELM_CPU_FEATURES_OFF", "")
    assert skinny_window() in skinny_module.SKINNY_WINDOWS.values()


def test_the_fp32_runner_takes_the_kernel_only_within_its_window(tiny_llama, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    weights = LlamaWeights(model, torch.float32)
    assert weights.skinny is kernel
    calls: list[int] = []

    def counted(kernel, x, *args):
        calls.append(x.shape[0])
        return skinny_linear(kernel, x, *args)

    def step_logits(use_kernel: bool):
        weights.skinny = kernel if use_kernel else None
        weights.skinny_tokens = (2, 4)
        runner = FixedRows(TorchRunner(weights), 4, 64)
        runner.forward([], [], [(row, list(range(3 + row, 30 + row)), 0) for row in range(4)])  # 108 tokens: torch
        return runner.forward([5, 6, 7, 8], [27, 27, 27, 27], [])  # 4 rows: the kernel

    monkeypatch.setattr("servelm.flavors.engine.runners.llama.skinny_linear", counted)
    with_kernel = step_logits(True)
    assert calls and set(calls) == {4}
    torch.testing.assert_close(with_kernel, step_logits(False), rtol=1e-4, atol=1e-4)
