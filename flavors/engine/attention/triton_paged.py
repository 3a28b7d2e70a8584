"""Attention over the paged KV cache on a GPU, as one Triton kernel: each query of a step (a decoding sequence's new
token, or a token of a prompt chunk) against its sequence's cached keys and values up to its own position, read
block by block through the sequence's block table, with an online softmax (flash attention's running maximum and
sum), so a step of decode rows and prompt chunks is one launch that reads each cached block once per (query, kv
head) and writes nothing but the output.

One program per (query, kv head): the kv head's group of query heads are the rows of one matrix product against a
block's keys (padded to sixteen rows, the smallest product the tensor cores take), so a block is read once for the
whole group. Scores, softmax and sums accumulate in fp32 whatever the cache dtype.

``paged_attention`` gives the launcher for a model's head size, group and block size, or None where Triton is not
installed. The kernel runs under Triton's interpreter on a CPU (``TRITON_INTERPRET=1``), which is how the tests hold
it to the torch reference (``paged_torch.py``) on machines without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from functools import cache
from typing import Any, Optional

#: (queries [n, kv_heads, group, head_dim], query_seqs [n] int32, tables [sequences, blocks] int32, keys, values
#: [pool blocks, kv_heads, block_size, head_dim] (the queries' dtype), lengths [n] int32: positions each query
#: attends over, scale) -> out [n, kv_heads * group, head_dim] fp32; every tensor on one device
PagedAttention = Callable[[Any, Any, Any, Any, Any, Any, float], Any]


def paged_attention(head_dim: int, group: int, block_size: int) -> Optional[PagedAttention]:
    """The launcher for this shape (None where Triton is not installed)."""
    if importlib.util.find_spec("triton") is None:
        return None
    return _launcher(head_dim, group, block_size, os.environ.get("TRITON_INTERPRET") == "1")


def _power_of_two(n: int, least: int = 1) -> int:
    return max(least, 1 << (n - 1).bit_length())


def _kernel(interpret: bool) -> Any:
    """The kernel (``triton_kernel.py``), decorated in the mode asked for: Triton reads ``TRITON_INTERPRET`` when a
    function is decorated, so the module is loaded again when the mode changed since it was."""
    import importlib

    from . import triton_kernel

    if triton_kernel.INTERPRETED != interpret:
        triton_kernel = importlib.reload(triton_kernel)
    return triton_kernel.attend


@cache
def _launcher(head_dim: int, group: int, block_size: int, interpret: bool) -> PagedAttention:
    import torch

    kernel = _kernel(interpret)
    group_pad = _power_of_two(group, 16)
    head_pad = _power_of_two(head_dim, 16)

    def launch(queries: Any, query_seqs: Any, tables: Any, keys: Any, values: Any, lengths: Any, scale: float) -> Any:
        count, kv_heads = queries.shape[0], queries.shape[1]
        out = torch.empty(count, kv_heads * group, head_dim, dtype=torch.float32, device=queries.device)
        if count:
            kernel[(count, kv_heads)](
                queries.contiguous(),
                query_seqs,
                tables,
                keys,
                values,
                lengths,
                out,
                scale,
                tables.stride(0),
                keys.stride(0),
                keys.stride(1),
                keys.stride(2),
                GROUP=group,
                GROUP_PAD=group_pad,
                HEAD_DIM=head_dim,
                HEAD_PAD=head_pad,
                BLOCK_SIZE=block_size,
            )
        return out

    return launch
