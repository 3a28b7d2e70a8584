"""Rotary embedding and cache writes for the onnx engine's cut decoder (``runners/onnx_layered.py``), as one numba
kernel: each step token's query and key heads turned by its position's angles, its key and value written into its
slot of the paged KV cache (a block and an offset in it), its queries laid out for the attention kernel
(``cpu_kernel.py``).

This is the part of the export's GroupQueryAttention nodes that is not attention: the pieces of the cut
graph give each token's packed query, key and value projections, unrotated. Rotation is in fp32 on the
half-split convention (feature d turns with feature d + rotary_dim / 2), with the angles of the export's own
tables; on a bf16 cache the key, value and queries are rounded once to the nearest bf16 (ties to even).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

#: (qkv [tokens, (heads + 2 * kv_heads) * head_dim] fp32: the projections, unrotated; blocks, offsets [tokens] int64:
#: where each token's key and value go; positions [tokens] int64; cos, sin [context, rotary_dim / 2] fp32; keys, values
#: [pool blocks, kv_heads, block_size, head_dim] (uint16 bf16 bits or fp32); queries [tokens, heads, head_dim], the
#: cache's dtype) -> None
CacheWriter = Callable[[Any, Any, Any, Any, Any, Any, Any, Any, Any], None]


@cache
def cache_writer(head_dim: int, heads: int, kv_heads: int, rotary_dim: int, bf16: bool) -> CacheWriter:
    """The compiled kernel for this shape (the sizes are compile-time constants; cached on disk by numba)."""
    import numpy as np

    from ..numba_cache import compiled_from_cache

    HEAD_DIM, HEADS, KV_HEADS, HALF, BF16 = head_dim, heads, kv_heads, rotary_dim // 2, bf16  # noqa: N806
    ROTARY = 2 * HALF  # noqa: N806

    def write(qkv, blocks, offsets, positions, cos, sin, keys, values, queries):
        for r in range(qkv.shape[0]):
            at, block, offset = positions[r], blocks[r], offsets[r]
            angle_cos, angle_sin = cos[at], sin[at]  # [rotary_dim / 2]
            turned = np.empty(HEAD_DIM, np.float32)
            turned_bits = turned.view(np.uint32)
            for head in range(HEADS + 2 * KV_HEADS):
                source = qkv[r, head * HEAD_DIM : (head + 1) * HEAD_DIM]  # [head_dim]
                if head < HEADS + KV_HEADS:  # a query or a key: turned
                    for d in range(HALF):
                        turned[d] = source[d] * angle_cos[d] - source[d + HALF] * angle_sin[d]
                        turned[d + HALF] = source[d + HALF] * angle_cos[d] + source[d] * angle_sin[d]
                    for d in range(ROTARY, HEAD_DIM):
                        turned[d] = source[d]
                else:
                    for d in range(HEAD_DIM):
                        turned[d] = source[d]
                if head < HEADS:
                    target = queries[r, head]
                elif head < HEADS + KV_HEADS:
                    target = keys[block, head - HEADS, offset]
                else:
                    target = values[block, head - HEADS - KV_HEADS, offset]
                for d in range(HEAD_DIM):
                    if BF16:  # the nearest bf16, ties to even
                        bits = turned_bits[d]
                        odd = (bits >> np.uint32(16)) & np.uint32(1)
                        target[d] = np.uint16((bits + np.uint32(0x7FFF) + odd) >> np.uint32(16))
                    else:
                        target[d] = turned[d]

    dtype = np.uint16 if bf16 else np.float32
    warm_up = (
        np.zeros((1, (heads + 2 * kv_heads) * head_dim), np.float32),
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        np.ones((1, max(1, rotary_dim // 2)), np.float32),
        np.zeros((1, max(1, rotary_dim // 2)), np.float32),
        np.zeros((1, kv_heads, 1, head_dim), dtype),
        np.zeros((1, kv_heads, 1, head_dim), dtype),
        np.zeros((1, heads, head_dim), dtype),
    )
    factory = (__name__, "cache_writer", [head_dim, heads, kv_heads, rotary_dim, bf16])
    return compiled_from_cache(write, warm_up, factory, nogil=True, fastmath=True, boundscheck=False)
