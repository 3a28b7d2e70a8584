"""Attention on CPU over the paged KV cache: each query (a decoding row's new token, or where the kernel runs on the
CPU's bf16 instructions each token of a prompt chunk too) against its sequence's cached keys and values up to its own
position, read through the sequence's block table, as one numba kernel over the runner's block pools in place. Both
CPU runners use it: the transformers runner between its torch ops, the onnx runner between the pieces of an export
cut at its attention nodes (``runners/onnx_layered.py``).

Why not the libraries' attention for decode steps: onnxruntime's GroupQueryAttention multiplies each query head of
each sequence on its own, reading each kv head once per query head; and in torch's ``scaled_dot_product_attention``
a kv head's group of queries is a matrix of a few rows, and the CPU kernels spend most of such a call on per-block
set-up rather than on reading the cache, which is what a decode step's attention has to do. Neither reads a block
table. Here each (query, kv head) reads its keys and values once, block by block, widened from bf16 to fp32 as they
are read, over that query's own length (no mask, no padding to the longest row), and the group's queries share
every key and value read. The softmax and both products accumulate in fp32. On CPUs with avx512_bf16 and head sizes
a multiple of 32, the scores take the CPU's bf16 dot product sixteen keys at a time and the values' weighted sums
stay in registers (``bf16_intrinsics.py``); the results are the same up to the order of additions. An fp32 cache
(the dtype of CPUs without bf16, AVX2 servers) is read eight positions at a time in the same way, one 256-bit vector
of scores per shuffle tree (``fp32_intrinsics.py``; the same sums as the plain loops, bit for bit, in half the time);
a bf16 cache elsewhere goes through fp32 loops written for the compiler to vectorise. The kernel runs on numba's
threads with the GIL released.

``decode_kernel`` gives the kernel for a model's head size, query group, block size and cache dtype, or None where
it cannot run (numba not installed, a dtype it does not read, not a CPU): the runner then uses the torch reference
(``paged_torch.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import Any, Optional

log = logging.getLogger("servelm.generation")

#: (queries [n, kv_heads, group, head_dim], query_seqs [n] int64: each query's sequence, tables [sequences, blocks]
#: int64: each sequence's block table, keys, values [pool blocks, kv_heads, block_size, head_dim] (queries, keys and
#: values all uint16 bf16 bits or all fp32), lengths [n] int64: the positions each query attends over, scale,
#: out [n, kv_heads * group, head_dim] fp32) -> None
DecodeKernel = Callable[[Any, Any, Any, Any, Any, Any, float, Any], None]

_CACHE_DTYPES = ("bfloat16", "float32")


def decode_kernel(head_dim: int, group: int, dtype: Any, device: Any, block_size: int) -> Optional[DecodeKernel]:
    """The compiled attention kernel for this shape, block size and cache dtype (compiled once per process and
    shape, and cached on disk by numba), or None where it does not apply."""
    name = str(dtype).removeprefix("torch.")
    if getattr(device, "type", device) != "cpu" or name not in _CACHE_DTYPES:
        return None
    try:
        import numba  # noqa: F401
    except ImportError:
        log.info("numba is not installed: attention runs in torch (pip install numba)")
        return None
    return _compiled(head_dim, group, block_size, name == "bfloat16")


def on_bf16_instructions(head_dim: int, dtype: Any) -> bool:
    """Whether the kernel runs on the CPU's bf16 instructions (``bf16_intrinsics.py``): a bf16 cache, a head
    size a multiple of 32, a CPU with avx512_bf16. Only then is it also the faster attention for prompt
    chunks, reading each key a chunk's query needs once per kv head at a fraction of the cost of torch's
    flash attention on CPU; elsewhere a query at a time would read the cache no faster than torch does a
    whole chunk."""
    from .bf16_intrinsics import PAIRS, has_bf16_dot

    return str(dtype).removeprefix("torch.") == "bfloat16" and head_dim % PAIRS == 0 and has_bf16_dot()


def set_kernel_threads(count: int) -> None:
    """Run the kernel on ``count`` threads of the calling thread (a runner passes its library's intra-op
    count, so ``--threads`` bounds both)."""
    import numba

    numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]


@cache
def _compiled(
    head_dim: int, group: int, block_size: int, bf16: bool, dot_bf16: bool = True, fp32_vectors: bool = True
) -> Optional[DecodeKernel]:
    """The kernel with the head size, group and block size as constants (the compiler unrolls the per-feature
    loops), compiled; None (logged) where numba cannot compile or run it."""
    try:
        return _compile(head_dim, group, block_size, bf16, dot_bf16, fp32_vectors)
    except Exception as exc:  # a numba without a usable threading layer, a compiler error: the library's attention
        log.warning("the attention kernel is unavailable (%s): attention runs in torch (paged_torch.py)", exc)
        return None


# the bf16 dot-product intrinsics, read by the kernel as globals (numba caches a kernel whose closure holds
# only plain constants; it could not key its cache on intrinsics held there)
_dot: Any = None
_dot16: Any = None
_accumulate: Any = None
_prefetch: Any = None
_dot8: Any = None
_accumulate8: Any = None


def _load_bf16_dot() -> None:
    global _dot, _dot16, _accumulate, _prefetch
    from .bf16_intrinsics import accumulate, dot, dot16, prefetch

    _dot, _dot16, _accumulate, _prefetch = dot, dot16, accumulate, prefetch


def _load_prefetch() -> None:
    global _prefetch
    from .bf16_intrinsics import prefetch

    _prefetch = prefetch


def _load_fp32_vectors() -> None:
    global _dot8, _accumulate8
    from .fp32_intrinsics import accumulate8, dot8

    _dot8, _accumulate8 = dot8, accumulate8


def _compile(
    head_dim: int, group: int, block_size: int, bf16: bool, dot_bf16: bool = True, fp32_vectors: bool = True
) -> DecodeKernel:
    """The kernel compiled; ``dot_bf16`` lets it take bf16 scores on the CPU's bf16 instruction where there
    is one (``bf16_intrinsics.py``, which needs blocks of whole sixteens of positions); ``fp32_vectors`` lets an
    fp32 cache be read eight positions at a time (``fp32_intrinsics.py``)."""
    import numba
    import numpy as np
    from numba import prange

    from ..numba_cache import compiled_from_cache
    from .bf16_intrinsics import LANES
    from .fp32_intrinsics import LANES as EIGHT

    if numba.config.THREADING_LAYER == "default":  # type: ignore[attr-defined]
        # tbb or OpenMP, never the workqueue layer: engine threads of one process may run the kernel at once
        numba.config.THREADING_LAYER = "threadsafe"  # type: ignore[attr-defined]

    HEAD_DIM, GROUP, BF16, BLOCK_SIZE = head_dim, group, bf16, block_size  # noqa: N806 (compile-time constants)
    DOT_BF16 = (  # noqa: N806
        dot_bf16 and block_size % LANES == 0 and on_bf16_instructions(head_dim, "bfloat16" if bf16 else "float32")
    )
    SIXTEEN = LANES * head_dim  # noqa: N806 (values in sixteen positions)
    # fp32 keys and values eight positions at a time (``fp32_intrinsics.py``): any head size a multiple of 8
    DOT_F32 = fp32_vectors and not bf16 and head_dim % EIGHT == 0 and block_size % EIGHT == 0  # noqa: N806
    if DOT_BF16:
        _load_bf16_dot()
    else:
        _load_prefetch()
    if DOT_F32:
        _load_fp32_vectors()
    BLOCK_VALUES = BLOCK_SIZE * HEAD_DIM  # noqa: N806 (values of one kv head in one block)
    LOG2E = np.float32(1.4426950408889634)  # noqa: N806

    def kernel(q, query_seqs, tables, keys, values, lengths, scale, out):
        count, kv_heads = q.shape[0], q.shape[1]
        # the pools as flat arrays, read at computed offsets: no array view is made per block (each costs a
        # reference count); (block b, kv head h, position p) starts at ((b * kv_heads + h) * BLOCK_SIZE + p) * HEAD_DIM
        flat_keys, flat_values = keys.ravel(), values.ravel()
        for task in prange(count * kv_heads):
            # queries from both ends in turn: numba hands each thread a contiguous share of the tasks, and a
            # prompt's queries grow longer one by one
            turn = task // kv_heads
            h = task - turn * kv_heads
            r = turn // 2 if turn % 2 == 0 else count - 1 - turn // 2
            n = lengths[r]
            table = tables[query_seqs[r]]  # [blocks]: where its positions live
            blocks = (n + BLOCK_SIZE - 1) // BLOCK_SIZE
            scores = np.empty((GROUP, n), np.float32)
            wide = np.empty(HEAD_DIM, np.float32)  # one key or value in fp32
            wide_bits = wide.view(np.uint32)
            if DOT_BF16:  # on the CPU's bf16 products, sixteen keys at a time
                for g in range(GROUP):
                    query, row = q[r, h, g], scores[g]  # [head_dim] bf16 bits, [n]
                    for j in range(blocks):
                        start = j * BLOCK_SIZE
                        size = min(BLOCK_SIZE, n - start)
                        base = (table[j] * kv_heads + h) * BLOCK_SIZE * HEAD_DIM  # the block's keys, [size, head_dim]
                        whole = size - size % LANES
                        if g == 0 and j + 1 < blocks:  # the next block's keys, a block ahead of their use
                            ahead = (table[j + 1] * kv_heads + h) * BLOCK_SIZE * HEAD_DIM
                            for t in range(0, BLOCK_SIZE, LANES):
                                _prefetch(flat_keys, ahead + t * HEAD_DIM, SIXTEEN)
                        for t in range(0, whole, LANES):
                            _dot16(query, flat_keys, base + t * HEAD_DIM, HEAD_DIM, np.float32(scale), row, start + t)
                        for t in range(whole, size):
                            row[start + t] = _dot(query, flat_keys, base + t * HEAD_DIM, HEAD_DIM) * scale
            else:  # fp32 keys eight at a time (``fp32_intrinsics.py``) where it can, the rest one by one
                queries = np.empty((GROUP, HEAD_DIM), np.float32)
                queries_bits = queries.view(np.uint32)
                for g in range(GROUP):
                    for d in range(HEAD_DIM):
                        if BF16:
                            queries_bits[g, d] = np.uint32(q[r, h, g, d]) << 16
                        else:
                            queries[g, d] = q[r, h, g, d]
                for j in range(blocks):
                    base = (table[j] * kv_heads + h) * BLOCK_VALUES  # the block's keys, [block_size, head_dim]
                    if j + 1 < blocks:  # the next block's keys, a block ahead of their use
                        _prefetch(flat_keys, (table[j + 1] * kv_heads + h) * BLOCK_VALUES, BLOCK_VALUES)
                    start = j * BLOCK_SIZE
                    size = min(BLOCK_SIZE, n - start)
                    whole = 0  # positions taken eight at a time
                    if DOT_F32:
                        whole = size - size % EIGHT
                        for g in range(GROUP):
                            for t in range(0, whole, EIGHT):
                                _dot8(queries, g, flat_keys, base + t * HEAD_DIM, HEAD_DIM, scale, scores, start + t)
                    for t in range(start + whole, start + size):
                        at = base + (t - start) * HEAD_DIM
                        for d in range(HEAD_DIM):
                            if BF16:
                                wide_bits[d] = np.uint32(flat_keys[at + d]) << 16  # bf16 is the top half of an fp32
                            else:
                                wide[d] = flat_keys[at + d]
                        for g in range(GROUP):
                            total = np.float32(0.0)
                            for d in range(HEAD_DIM):
                                total += queries[g, d] * wide[d]
                            scores[g, t] = total * scale
            # softmax per query, with exp as 2^i * 2^f (f in [0, 1): a polynomial) so the loop vectorizes
            powers = np.empty(n, np.int32)
            power_values = powers.view(np.float32)
            totals = np.empty(GROUP, np.float32)
            for g in range(GROUP):
                row = scores[g]
                top = row[0]
                for t in range(n):
                    top = max(top, row[t])
                for t in range(n):
                    y = max(row[t] - top, np.float32(-87.0)) * LOG2E
                    i = np.floor(y)
                    f = y - i
                    p = np.float32(1.8775767e-3)
                    p = p * f + np.float32(8.9893397e-3)
                    p = p * f + np.float32(5.5826318e-2)
                    p = p * f + np.float32(2.4015361e-1)
                    p = p * f + np.float32(6.9315308e-1)
                    p = p * f + np.float32(9.9999994e-1)
                    row[t] = p
                    powers[t] = (np.int32(i) + np.int32(127)) << 23
                total = np.float32(0.0)
                for t in range(n):
                    row[t] *= power_values[t]
                    total += row[t]
                totals[g] = total
            acc = np.zeros((GROUP, HEAD_DIM), np.float32)
            if DOT_BF16:  # sixteen values at a time, the sums held in registers
                for j in range(blocks):
                    start = j * BLOCK_SIZE
                    size = min(BLOCK_SIZE, n - start)
                    first = (table[j] * kv_heads + h) * BLOCK_SIZE  # the block's first value, in positions of the pool
                    whole = size - size % LANES
                    if j + 1 < blocks:
                        ahead = (table[j + 1] * kv_heads + h) * BLOCK_SIZE * HEAD_DIM
                        for t in range(0, BLOCK_SIZE, LANES):
                            _prefetch(flat_values, ahead + t * HEAD_DIM, SIXTEEN)
                    for t in range(0, whole, LANES):
                        _accumulate(flat_values, first + t, scores, start + t, acc, HEAD_DIM, GROUP, LANES)
                    for t in range(whole, size):
                        _accumulate(flat_values, first + t, scores, start + t, acc, HEAD_DIM, GROUP, 1)
            else:  # fp32 values eight at a time, the sums held in registers, where it can; the rest one by one
                for j in range(blocks):
                    base = (table[j] * kv_heads + h) * BLOCK_VALUES  # the block's values, [block_size, head_dim]
                    if j + 1 < blocks:
                        _prefetch(flat_values, (table[j + 1] * kv_heads + h) * BLOCK_VALUES, BLOCK_VALUES)
                    start = j * BLOCK_SIZE
                    size = min(BLOCK_SIZE, n - start)
                    whole = 0
                    if DOT_F32:
                        whole = size - size % EIGHT
                        for t in range(0, whole, EIGHT):
                            at = base + t * HEAD_DIM
                            _accumulate8(flat_values, at, scores, start + t, acc, HEAD_DIM, GROUP, EIGHT)
                    for t in range(start + whole, start + size):
                        at = base + (t - start) * HEAD_DIM
                        for d in range(HEAD_DIM):
                            if BF16:
                                wide_bits[d] = np.uint32(flat_values[at + d]) << 16
                            else:
                                wide[d] = flat_values[at + d]
                        for g in range(GROUP):
                            weight = scores[g, t]
                            for d in range(HEAD_DIM):
                                acc[g, d] += weight * wide[d]
            for g in range(GROUP):
                inverse = np.float32(1.0) / totals[g]
                for d in range(HEAD_DIM):
                    out[r, h * GROUP + g, d] = acc[g, d] * inverse

    # compiled now (or loaded from numba's cache), not in a server's first decode step: the types the runner passes
    cache_dtype = np.uint16 if bf16 else np.float32
    warm_up = (
        np.zeros((1, 1, group, head_dim), cache_dtype),
        np.zeros(1, np.int64),
        np.zeros((1, 1), np.int64),
        np.zeros((1, 1, block_size, head_dim), cache_dtype),
        np.zeros((1, 1, block_size, head_dim), cache_dtype),
        np.ones(1, np.int64),
        1.0,
        np.zeros((1, group, head_dim), np.float32),
    )
    factory = (__name__, "_compile", [head_dim, group, block_size, bf16, dot_bf16, fp32_vectors])
    options = {"nogil": True, "fastmath": True, "parallel": True, "boundscheck": False}
    return compiled_from_cache(kernel, warm_up, factory, **options)
