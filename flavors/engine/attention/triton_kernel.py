"""The Triton kernel of ``triton_paged.py`` (imported only where Triton is installed; Triton's interpreter patches
the language functions it finds among a module's globals, so the kernel lives at module level)."""

import os

import triton
import triton.language as tl

#: whether this module's kernel was decorated for Triton's interpreter
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def attend(
    queries,
    query_seqs,
    tables,
    keys,
    values,
    lengths,
    out,
    scale,
    table_stride,
    block_stride,
    head_stride,
    position_stride,
    GROUP: tl.constexpr,  # noqa: N803 (compile-time constants)
    GROUP_PAD: tl.constexpr,  # noqa: N803
    HEAD_DIM: tl.constexpr,  # noqa: N803
    HEAD_PAD: tl.constexpr,  # noqa: N803
    BLOCK_SIZE: tl.constexpr,  # noqa: N803
):
    """One (query, kv head): the head's group of queries [GROUP, HEAD_DIM] against the query's sequence's first
    ``lengths[query]`` positions, block by block through its table, online softmax in fp32; writes [GROUP, HEAD_DIM]
    of ``out`` [queries, kv_heads * GROUP, HEAD_DIM]."""
    query = tl.program_id(0)
    head = tl.program_id(1)
    kv_heads = tl.num_programs(1)
    seq = tl.load(query_seqs + query)
    length = tl.load(lengths + query)
    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, HEAD_PAD)
    p = tl.arange(0, BLOCK_SIZE)
    rows = g < GROUP
    features = d < HEAD_DIM
    at = ((query * kv_heads + head) * GROUP + g[:, None]) * HEAD_DIM + d[None, :]  # [GROUP_PAD, HEAD_PAD]
    q = tl.load(queries + at, mask=rows[:, None] & features[None, :], other=0.0)
    top = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    total = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_PAD], tl.float32)
    for j in range(0, tl.cdiv(length, BLOCK_SIZE)):
        block = tl.load(tables + seq * table_stride + j).to(tl.int64)
        where = block * block_stride + head * head_stride + p[:, None] * position_stride + d[None, :]
        k = tl.load(keys + where, mask=features[None, :], other=0.0)  # [BLOCK_SIZE, HEAD_PAD]
        v = tl.load(values + where, mask=features[None, :], other=0.0)
        scores = tl.dot(q, tl.trans(k)).to(tl.float32) * scale  # [GROUP_PAD, BLOCK_SIZE]
        scores = tl.where((j * BLOCK_SIZE + p)[None, :] < length, scores, float("-inf"))
        new_top = tl.maximum(top, tl.max(scores, 1))
        kept = tl.exp(top - new_top)
        weights = tl.exp(scores - new_top[:, None])
        total = total * kept + tl.sum(weights, 1)
        acc = acc * kept[:, None] + tl.dot(weights.to(v.dtype), v).to(tl.float32)
        top = new_top
    tl.store(out + at, acc / total[:, None], mask=rows[:, None] & features[None, :])
