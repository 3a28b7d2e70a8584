"""Attention over the paged KV cache in plain torch, on any device: the reference the kernels are held to, and what
a runner uses where no kernel runs (a GPU without Triton, a CPU without numba, prompt chunks on CPUs without bf16
instructions). It gathers a sequence's blocks into one contiguous run of positions and calls torch's
``scaled_dot_product_attention`` on it; the kernels read the blocks in place instead.

Pools are [blocks, kv_heads, block_size, head_dim]; a block table lists a sequence's blocks in order, so position
``p`` of the sequence lives at ``table[p // block_size]``, offset ``p % block_size``."""

from __future__ import annotations

from typing import Any


def gather(pool: Any, table: Any, length: int) -> Any:
    """The first ``length`` positions of a sequence, [kv_heads, length, head_dim], from its block ``table`` [blocks]
    (a long tensor on the pool's device)."""
    blocks = -(-length // pool.shape[2])
    runs = pool[table[:blocks]]  # [blocks, kv_heads, block_size, head_dim]
    return runs.transpose(0, 1).reshape(pool.shape[1], -1, pool.shape[3])[:, :length]


def decode_attention(torch: Any, queries: Any, tables: Any, keys: Any, values: Any, lengths: list[int]) -> Any:
    """One query per sequence: ``queries`` [n, heads, head_dim] against each sequence's first ``lengths[i]`` cached
    positions (``tables`` [n, blocks] long). Returns [n, heads, head_dim]: a kv head's group of query heads as one
    block over its keys, the sequences padded to the longest and masked."""
    count, heads, head_dim = queries.shape
    kv_heads, size = keys.shape[1], keys.shape[2]
    longest = max(lengths)
    blocks = -(-longest // size)
    chosen = tables[:, :blocks]  # [n, blocks]

    def padded(pool: Any) -> Any:  # [n, kv_heads, blocks * block_size, head_dim]
        return pool[chosen].transpose(1, 2).reshape(count, kv_heads, blocks * size, head_dim)

    where = torch.arange(blocks * size, device=queries.device)
    mask = where[None, :] < torch.tensor(lengths, device=queries.device)[:, None]  # [n, positions]
    attended = torch.nn.functional.scaled_dot_product_attention(
        queries.view(count, kv_heads, heads // kv_heads, head_dim),
        padded(keys),
        padded(values),
        attn_mask=mask[:, None, None, :],
    )  # [n, kv_heads, group, head_dim]
    return attended.reshape(count, heads, head_dim)


def chunk_attention(torch: Any, queries: Any, table: Any, keys: Any, values: Any, start: int) -> Any:
    """A prompt chunk of one sequence: ``queries`` [count, heads, head_dim] at positions ``start ..`` attending to the
    cached positions before them and causally among themselves (their own keys already written). Returns [count,
    heads, head_dim]."""
    count = queries.shape[0]
    stop = start + count
    mask = None
    if start:
        where = torch.arange(stop, device=queries.device)
        mask = where[None, :] <= torch.arange(start, stop, device=queries.device)[:, None]  # [count, stop]
    attended = torch.nn.functional.scaled_dot_product_attention(
        queries.transpose(0, 1)[None],
        gather(keys, table, stop)[None],
        gather(values, table, stop)[None],
        attn_mask=mask,
        is_causal=mask is None,
        enable_gqa=True,
    )  # [1, heads, count, head_dim]
    return attended[0].transpose(0, 1)
