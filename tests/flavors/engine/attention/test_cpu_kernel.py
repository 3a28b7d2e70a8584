"""The CPU attention kernel over the paged KV cache: what torch's attention computes over each sequence's own
positions, read through block tables in any order, and the torch reference (``paged_torch.py``) agreeing with both."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

from servelm.flavors.engine.attention import paged_torch  # noqa: E402
from servelm.flavors.engine.attention.bf16_intrinsics import has_bf16_dot  # noqa: E402
from servelm.flavors.engine.attention.cpu_kernel import decode_kernel  # noqa: E402
from servelm.flavors.engine.fixed_rows import FixedRows  # noqa: E402
from servelm.flavors.engine.runners.llama import LlamaWeights, TorchRunner, _numpy_view  # noqa: E402


def paged(generator, seqs, kv_heads, head_dim, block_size, longest, dtype):
    """Pools [blocks, kv_heads, block_size, head_dim] with ``seqs`` sequences' blocks scattered in a shuffled order
    (and spare blocks between them), and each sequence's block table [seqs, blocks] int64."""
    per_seq = -(-longest // block_size)
    total = seqs * per_seq + 3
    order = torch.randperm(total, generator=generator)[: seqs * per_seq].view(seqs, per_seq)
    keys = torch.randn(total, kv_heads, block_size, head_dim, generator=generator).to(dtype)
    values = torch.randn(total, kv_heads, block_size, head_dim, generator=generator).to(dtype)
    return keys, values, order.numpy().astype(np.int64)


def reference(q, keys, values, tables, query_seqs, lengths):
    """Each query [kv_heads, group, head_dim] attending over its sequence's first ``lengths`` positions, in fp32,
    from the positions gathered out of the blocks one by one."""
    count, kv_heads, group, head_dim = q.shape
    size = keys.shape[2]
    out = torch.empty(count, kv_heads * group, head_dim)
    for r, (seq, n) in enumerate(zip(query_seqs.tolist(), lengths.tolist())):
        k = torch.stack([keys[tables[seq, p // size], :, p % size] for p in range(n)], 1)  # [kv_heads, n, head_dim]
        v = torch.stack([values[tables[seq, p // size], :, p % size] for p in range(n)], 1)
        attended = torch.nn.functional.scaled_dot_product_attention(q[r].float(), k.float(), v.float())
        out[r] = attended.reshape(kv_heads * group, head_dim)
    return out


def run_kernel(kernel, q, keys, values, tables, query_seqs, lengths):
    count, kv_heads, group, head_dim = q.shape
    out = np.empty((count, kv_heads * group, head_dim), np.float32)
    views = [_numpy_view(torch, t) for t in (q, keys, values)]
    kernel(views[0], query_seqs, tables, views[1], views[2], lengths, head_dim**-0.5, out)
    return torch.from_numpy(out)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    ("kv_heads", "group", "head_dim", "block_size"), [(3, 3, 64, 32), (2, 1, 32, 16), (1, 4, 16, 8)]
)
def test_the_kernel_computes_what_torch_attention_does(dtype, kv_heads, group, head_dim, block_size):
    generator = torch.Generator().manual_seed(0)
    seqs = 5
    keys, values, tables = paged(generator, seqs, kv_heads, head_dim, block_size, 96, dtype)
    q = (torch.randn(seqs, kv_heads, group, head_dim, generator=generator) * 3).to(dtype)
    lengths = np.array([1, 17, 96, 40, 2], dtype=np.int64)
    for seq, n in enumerate(lengths):  # what lies past a sequence's length must not count
        last = tables[seq, (n - 1) // block_size]
        keys[last, :, (n - 1) % block_size + 1 :] = 1e4
        values[last, :, (n - 1) % block_size + 1 :] = -1e4
    kernel = decode_kernel(head_dim, group, dtype, torch.device("cpu"), block_size)
    assert kernel is not None
    query_seqs = np.arange(seqs, dtype=np.int64)
    got = run_kernel(kernel, q, keys, values, tables, query_seqs, lengths)
    expected = reference(q, keys, values, tables, query_seqs, lengths)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=2e-5)
    torch_paged = paged_torch.decode_attention(
        torch, q.view(seqs, -1, head_dim).float(), torch.from_numpy(tables), keys.float(), values.float(), lengths
    )
    torch.testing.assert_close(torch_paged.reshape(expected.shape), expected, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_prompts_queries_share_a_table_and_see_up_to_their_own_position(dtype):
    generator = torch.Generator().manual_seed(2)
    kv_heads, group, head_dim, start, count, size = 3, 3, 64, 20, 37, 32
    keys, values, tables = paged(generator, 2, kv_heads, head_dim, size, start + count, dtype)
    q = (torch.randn(count, kv_heads, group, head_dim, generator=generator) * 3).to(dtype)
    kernel = decode_kernel(head_dim, group, dtype, torch.device("cpu"), size)
    assert kernel is not None
    query_seqs = np.full(count, 1, np.int64)
    lengths = np.arange(start + 1, start + count + 1)
    got = run_kernel(kernel, q, keys, values, tables, query_seqs, lengths)
    expected = reference(q, keys, values, tables, query_seqs, lengths)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=2e-5)
    chunk = paged_torch.chunk_attention(
        torch, q.view(count, -1, head_dim).float(), torch.from_numpy(tables[1]), keys.float(), values.float(), start
    )
    torch.testing.assert_close(chunk.reshape(expected.shape), expected, atol=2e-5, rtol=2e-5)


@pytest.mark.skipif(not has_bf16_dot(), reason="the CPU has no avx512_bf16")
@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("block_size", [16, 32])
def test_bf16_products_give_the_scores_widening_does(head_dim, block_size):
    from servelm.flavors.engine.attention import cpu_kernel

    generator = torch.Generator().manual_seed(1)
    seqs, kv_heads, group = 4, 2, 3
    keys, values, tables = paged(generator, seqs, kv_heads, head_dim, block_size, 80, torch.bfloat16)
    q = (torch.randn(seqs, kv_heads, group, head_dim, generator=generator) * 3).to(torch.bfloat16)
    lengths = np.array([16, 1, 80, 33], dtype=np.int64)  # whole sixteens of keys, and what is left over
    query_seqs = np.arange(seqs, dtype=np.int64)
    outs = [
        run_kernel(
            cpu_kernel._compile(head_dim, group, block_size, True, products),
            q,
            keys,
            values,
            tables,
            query_seqs,
            lengths,
        )
        for products in (True, False)
    ]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(outs[0], reference(q, keys, values, tables, query_seqs, lengths), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("head_dim", [8, 24, 64, 128])
@pytest.mark.parametrize("block_size", [8, 32])
def test_fp32_vectors_give_what_the_loops_do(head_dim, block_size):
    from servelm.flavors.engine.attention import cpu_kernel

    generator = torch.Generator().manual_seed(2)
    seqs, kv_heads, group = 4, 2, 3
    keys, values, tables = paged(generator, seqs, kv_heads, head_dim, block_size, 80, torch.float32)
    q = torch.randn(seqs, kv_heads, group, head_dim, generator=generator) * 3
    lengths = np.array([8, 1, 80, 37], dtype=np.int64)  # whole eights of positions, and what is left over
    query_seqs = np.arange(seqs, dtype=np.int64)
    kernels = [cpu_kernel._compile(head_dim, group, block_size, False, True, vectors) for vectors in (True, False)]
    outs = [run_kernel(kernel, q, keys, values, tables, query_seqs, lengths) for kernel in kernels]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(outs[0], reference(q, keys, values, tables, query_seqs, lengths), atol=2e-5, rtol=2e-5)


def test_no_kernel_where_it_cannot_run():
    assert decode_kernel(64, 3, torch.float16, torch.device("cpu"), 32) is None
    assert decode_kernel(64, 3, torch.bfloat16, torch.device("cuda"), 32) is None


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_runner_decodes_the_same_with_the_kernel_as_with_torch(tiny_llama, dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    weights = LlamaWeights(model, getattr(torch, dtype))

    def steps(fused: bool):
        runner = FixedRows(TorchRunner(weights, fused_decode=fused), 4, 64)
        assert (runner.runner.decode_kernel is not None) == fused
        runner.forward([], [], [(0, list(range(3, 13)), 0), (1, list(range(20, 27)), 0)])
        runner.forward([], [], [(2, list(range(40, 43)), 0)])
        first = runner.forward([5, 6, 7], [10, 7, 3], [])  # rows of three lengths
        second = runner.forward([8, 9, 10], [11, 8, 4], [(3, list(range(50, 60)), 0)])  # and a prompt chunk
        return torch.cat([first, second]).float()

    tolerance = 1e-4 if dtype == "float32" else 3e-2
    torch.testing.assert_close(steps(True), steps(False), atol=tolerance, rtol=tolerance)


def test_the_kernel_runs_on_a_thread_safe_layer():
    import numba

    kernel = decode_kernel(16, 2, torch.float32, torch.device("cpu"), 16)
    assert kernel is not None
    assert numba.threading_layer() in ("tbb", "omp")  # engine threads of one process may call it at once


def test_a_kernel_that_cannot_compile_leaves_the_torch_attention(monkeypatch, caplog):
    from servelm.flavors.engine.attention import cpu_kernel

    def broken(*args):
        raise ValueError("no threading layer")

    monkeypatch.setattr(cpu_kernel, "_compile", broken)
    cpu_kernel._compiled.cache_clear()
    try:
        assert decode_kernel(48, 2, torch.float32, torch.device("cpu"), 32) is None
    finally:
        cpu_kernel._compiled.cache_clear()
    assert "attention runs in torch" in caplog.text


def test_the_kernel_compiles_where_numba_cannot_cache_it(monkeypatch):
    import numba

    from servelm.flavors.engine.attention import cpu_kernel

    monkeypatch.setattr(numba.config, "CACHE_LOCATOR_CLASSES", "NoLocatorHere")  # numba's cache has nowhere to go
    kernel = cpu_kernel._compile(8, 1, 4, False)
    out = np.empty((1, 1, 8), np.float32)
    kernel(
        np.ones((1, 1, 1, 8), np.float32),
        np.zeros(1, np.int64),
        np.array([[1, 0]], np.int64),
        np.ones((2, 1, 4, 8), np.float32),
        np.ones((2, 1, 4, 8), np.float32),
        np.array([6]),
        0.5,
        out,
    )
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)
