"""Prompt chunks that start with the same cached blocks (a shared system prompt) attended as one, on a CPU: the
prefix's keys and values are read once for every chunk's queries, each chunk's own positions after it apart, and
the two merged by their log-sum-exps (cascade attention, as FlashInfer's and vLLM's for shared prefixes).

Attending each chunk alone (``paged_torch.chunk_attention``) gathers and reads the whole prefix once per chunk: when
sixteen agents' requests arrive together behind one 1000-token system prompt, that is sixteen copies of its keys
and values per layer, and sixteen small matrix products where one large one does. The attention over a part comes
from torch's CPU flash-attention kernel, which also returns each query's log-sum-exp.

Pools are [blocks, kv_heads, block_size, head_dim]; a query head ``h * group + g`` reads kv head ``h``, so a chunk's
queries are laid out per kv head as [kv_heads, tokens * group, head_dim] and the group shares the keys."""

from __future__ import annotations

from typing import Any, Optional

from .paged_torch import gather

#: leading blocks chunks must share for them to be attended together (below, the merge costs what it saves)
MIN_SHARED_BLOCKS = 2


def flash_with_lse(torch: Any) -> Optional[Any]:
    """torch's CPU flash-attention returning (output, log-sum-exp), or None where this torch has none."""
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def shared_prefix_groups(blocks: list[list[int]], starts: list[int], block_size: int) -> list[tuple[int, list[int]]]:
    """Which of a step's prompt chunks to attend together, given each one's block table and first position: [(shared
    blocks, indices of the chunks)]. Chunks join a group when they begin with the same block; the group shares the
    leading blocks common to all of its tables that lie wholly before every member's first query, and is kept when
    that is at least ``MIN_SHARED_BLOCKS``. Chunks in no group are attended alone."""
    by_first: dict[int, list[int]] = {}
    for index, (table, start) in enumerate(zip(blocks, starts)):
        if table and start >= MIN_SHARED_BLOCKS * block_size:
            by_first.setdefault(table[0], []).append(index)
    groups = []
    for members in by_first.values():
        if len(members) < 2:
            continue
        shared = min(starts[i] for i in members) // block_size
        first = blocks[members[0]]
        for i in members[1:]:
            table = blocks[i]
            same = 0
            while same < shared and same < len(table) and table[same] == first[same]:
                same += 1
            shared = same
        if shared >= MIN_SHARED_BLOCKS:
            groups.append((shared, members))
    return groups


def shared_prefix_attention(
    torch: Any,
    queries: list[Any],
    tables: list[Any],
    keys: Any,
    values: Any,
    starts: list[int],
    shared: int,
    scale: float,
) -> list[Any]:
    """Chunks ``queries[i]`` [count_i, heads, head_dim] at positions ``starts[i] ..`` of sequences whose block
    ``tables[i]`` (long tensors) begin with the same ``shared`` blocks, all before ``min(starts)``; each attends to
    its cached positions and causally among its own. Returns [count_i, heads, head_dim] per chunk, as
    ``chunk_attention`` on each would."""
    flash = flash_with_lse(torch)
    assert flash is not None, "shared_prefix_attention needs torch's CPU flash attention (flash_with_lse)"
    kv_heads, size, head_dim = keys.shape[1], keys.shape[2], keys.shape[3]
    heads = queries[0].shape[1]
    group = heads // kv_heads

    def per_kv_head(q: Any) -> Any:  # [count, heads, head_dim] -> [1, kv_heads, count * group, head_dim]
        return q.reshape(q.shape[0], kv_heads, group, head_dim).transpose(0, 1).reshape(1, kv_heads, -1, head_dim)

    prefix = shared * size
    folded = [per_kv_head(q) for q in queries]
    on_prefix, prefix_lse = flash(
        torch.cat(folded, dim=2),
        gather(keys, tables[0], prefix)[None],
        gather(values, tables[0], prefix)[None],
        scale=scale,
    )  # [1, kv_heads, all queries, head_dim], [1, kv_heads, all queries]
    results, row = [], 0
    for q, folded_q, table, start in zip(queries, folded, tables, starts):
        count = q.shape[0]
        stop = start + count
        own_keys = gather(keys, table[shared:], stop - prefix)[None]  # [1, kv_heads, stop - prefix, head_dim]
        own_values = gather(values, table[shared:], stop - prefix)[None]
        seen = torch.arange(prefix, stop)[None, :] <= torch.arange(start, stop)[:, None]  # [count, stop - prefix]
        mask = torch.zeros(seen.shape, dtype=q.dtype).masked_fill_(~seen, float("-inf"))
        on_own, own_lse = flash(
            folded_q, own_keys, own_values, attn_mask=mask.repeat_interleave(group, dim=0), scale=scale
        )  # [1, kv_heads, count * group, head_dim], [1, kv_heads, count * group]
        rows = slice(row, row + count * group)
        row += count * group
        first_lse, second_lse = prefix_lse[:, :, rows], own_lse
        top = torch.maximum(first_lse, second_lse)
        first, second = (first_lse - top).exp()[..., None], (second_lse - top).exp()[..., None]
        merged = (on_prefix[:, :, rows].float() * first + on_own.float() * second) / (first + second)
        results.append(
            merged[0].view(kv_heads, count, group, head_dim).transpose(0, 1).reshape(count, heads, head_dim).to(q.dtype)
        )
    return results
