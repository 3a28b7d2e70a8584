"""The CPU decode-attention kernel: what torch's attention computes, over each row's own length of the cache."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

from servelm.flavors.engine.attention.bf16_intrinsics import has_bf16_dot  # noqa: E402
from servelm.flavors.engine.attention.cpu_kernel import decode_kernel  # noqa: E402
from servelm.flavors.engine.model_runner import Chunk  # noqa: E402
from servelm.flavors.engine.runners.llama import LlamaWeights, TorchRunner, _numpy_view  # noqa: E402


def reference(q, keys, values, lengths):
    """Each row's queries [kv_heads, group, head_dim] attending over its first ``lengths[row]`` positions, in fp32."""
    rows, kv_heads, group, head_dim = q.shape
    out = torch.empty(rows, kv_heads * group, head_dim)
    for r, n in enumerate(lengths.tolist()):
        attended = torch.nn.functional.scaled_dot_product_attention(
            q[r].float(), keys[r, :, :n].float(), values[r, :, :n].float()
        )  # [kv_heads, group, head_dim]
        out[r] = attended.reshape(kv_heads * group, head_dim)
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("kv_heads", "group", "head_dim"), [(3, 3, 64), (2, 1, 32), (1, 4, 16)])
def test_the_kernel_computes_what_torch_attention_does(dtype, kv_heads, group, head_dim):
    generator = torch.Generator().manual_seed(0)
    rows, capacity = 5, 96
    keys = torch.randn(rows + 2, kv_heads, capacity, head_dim, generator=generator).to(dtype)
    values = torch.randn(rows + 2, kv_heads, capacity, head_dim, generator=generator).to(dtype)
    q = (torch.randn(rows, kv_heads, group, head_dim, generator=generator) * 3).to(dtype)
    lengths = np.array([1, 17, 96, 40, 2], dtype=np.int64)
    for r, n in enumerate(lengths):  # what lies past a row's length must not count
        keys[r, :, n:] = 1e4
        values[r, :, n:] = -1e4
    kernel = decode_kernel(head_dim, group, dtype, torch.device("cpu"))
    assert kernel is not None
    out = np.empty((rows, kv_heads * group, head_dim), np.float32)
    views = [_numpy_view(torch, t) for t in (q, keys, values)]
    kernel(views[0], np.arange(rows), *views[1:], lengths, head_dim**-0.5, out)
    torch.testing.assert_close(torch.from_numpy(out), reference(q, keys, values, lengths), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_prompts_queries_share_a_row_and_see_up_to_their_own_position(dtype):
    generator = torch.Generator().manual_seed(2)
    kv_heads, group, head_dim, start, count = 3, 3, 64, 20, 37
    keys = torch.randn(3, kv_heads, 96, head_dim, generator=generator).to(dtype)
    values = torch.randn(3, kv_heads, 96, head_dim, generator=generator).to(dtype)
    q = (torch.randn(count, kv_heads, group, head_dim, generator=generator) * 3).to(dtype)
    kernel = decode_kernel(head_dim, group, dtype, torch.device("cpu"))
    assert kernel is not None
    out = np.empty((count, kv_heads * group, head_dim), np.float32)
    views = [_numpy_view(torch, t) for t in (q, keys, values)]
    kernel(views[0], np.full(count, 1), *views[1:], np.arange(start + 1, start + count + 1), head_dim**-0.5, out)
    causal = torch.arange(start + count)[None, :] <= torch.arange(start, start + count)[:, None]  # [count, positions]
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.float().permute(1, 2, 0, 3),  # [kv_heads, group, count, head_dim]
        keys[1, :, : start + count, None].float().transpose(1, 2),
        values[1, :, : start + count, None].float().transpose(1, 2),
        attn_mask=causal,
    ).permute(2, 0, 1, 3)  # [count, kv_heads, group, head_dim]
    torch.testing.assert_close(torch.from_numpy(out), expected.reshape(count, -1, head_dim), atol=2e-5, rtol=2e-5)


@pytest.mark.skipif(not has_bf16_dot(), reason="the CPU has no avx512_bf16")
@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_bf16_products_give_the_scores_widening_does(head_dim):
    from servelm.flavors.engine.attention import cpu_kernel as decode_attention

    generator = torch.Generator().manual_seed(1)
    rows, kv_heads, group, capacity = 4, 2, 3, 80
    keys = torch.randn(rows, kv_heads, capacity, head_dim, generator=generator).to(torch.bfloat16)
    values = torch.randn(rows, kv_heads, capacity, head_dim, generator=generator).to(torch.bfloat16)
    q = (torch.randn(rows, kv_heads, group, head_dim, generator=generator) * 3).to(torch.bfloat16)
    lengths = np.array([16, 1, 80, 33], dtype=np.int64)  # whole blocks of sixteen keys, and what is left over
    outs = []
    for products in (True, False):
        kernel = decode_attention._compile(head_dim, group, True, products)
        out = np.empty((rows, kv_heads * group, head_dim), np.float32)
        views = [_numpy_view(torch, t) for t in (q, keys, values)]
        kernel(views[0], np.arange(rows), *views[1:], lengths, head_dim**-0.5, out)
        outs.append(torch.from_numpy(out))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(outs[0], reference(q, keys, values, lengths), atol=2e-5, rtol=2e-5)


def test_no_kernel_where_it_cannot_run():
    assert decode_kernel(64, 3, torch.float16, torch.device("cpu")) is None
    assert decode_kernel(64, 3, torch.bfloat16, torch.device("cuda")) is None


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_runner_decodes_the_same_with_the_kernel_as_without(tiny_llama, dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    weights = LlamaWeights(model, getattr(torch, dtype))

    def steps(fused: bool):
        runner = TorchRunner(weights, max_rows=4, fused_decode=fused)
        assert (runner.decode_kernel is not None) == fused
        runner.ensure(4, 64)
        runner.forward([], [], [Chunk(0, list(range(3, 13)), 0), Chunk(1, list(range(20, 27)), 0)])
        runner.forward([], [], [Chunk(2, list(range(40, 43)), 0)])
        first = runner.forward([5, 6, 7], [10, 7, 3], [])  # rows of three lengths
        second = runner.forward([8, 9, 10], [11, 8, 4], [Chunk(3, list(range(50, 60)), 0)])  # and a prompt chunk
        return torch.cat([first, second]).float()

    tolerance = 1e-4 if dtype == "float32" else 3e-2
    torch.testing.assert_close(steps(True), steps(False), atol=tolerance, rtol=tolerance)


def test_the_kernel_runs_on_a_thread_safe_layer():
    import numba

    kernel = decode_kernel(16, 2, torch.float32, torch.device("cpu"))
    assert kernel is not None
    assert numba.threading_layer() in ("tbb", "omp")  # engine threads of one process may call it at once


def test_a_kernel_that_cannot_compile_leaves_the_library_attention(monkeypatch, caplog):
    from servelm.flavors.engine.attention import cpu_kernel as decode_attention

    def broken(*args):
        raise ValueError("no threading layer")

    monkeypatch.setattr(decode_attention, "_compile", broken)
    decode_attention._compiled.cache_clear()
    try:
        assert decode_kernel(48, 2, torch.float32, torch.device("cpu")) is None
    finally:
        decode_attention._compiled.cache_clear()
    assert "attention runs in the model's library" in caplog.text


def test_the_kernel_compiles_where_numba_cannot_cache_it(monkeypatch):
    import numba

    from servelm.flavors.engine.attention import cpu_kernel as decode_attention

    monkeypatch.setattr(numba.config, "CACHE_LOCATOR_CLASSES", "NoLocatorHere")  # numba's cache has nowhere to go
    kernel = decode_attention._compile(8, 1, False)
    out = np.empty((1, 1, 8), np.float32)
    kernel(
        np.ones((1, 1, 1, 8), np.float32),
        np.zeros(1, np.int64),
        np.ones((1, 1, 4, 8), np.float32),
        np.ones((1, 1, 4, 8), np.float32),
        np.array([3]),
        0.5,
        out,
    )
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)
