"""Chunks behind one cached prefix attended together compute what each attended alone does."""

import pytest

torch = pytest.importorskip("torch")

from servelm.flavors.engine.attention.paged_torch import chunk_attention  # noqa: E402
from servelm.flavors.engine.attention.shared_prefix import (  # noqa: E402
    MIN_SHARED_BLOCKS,
    flash_with_lse,
    shared_prefix_attention,
    shared_prefix_groups,
)

if flash_with_lse(torch) is None:
    pytest.skip("this torch has no CPU flash attention returning log-sum-exps", allow_module_level=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(4, 2, 16), (9, 3, 64)])
def test_chunks_behind_a_shared_prefix_match_each_attended_alone(dtype, heads, kv_heads, head_dim):
    size, shared = 8, 3  # the first 24 positions are the shared prefix's blocks
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(40, kv_heads, size, head_dim, generator=generator).to(dtype)
    values = torch.randn(40, kv_heads, size, head_dim, generator=generator).to(dtype)
    # three sequences: the shared blocks 0-2, then blocks of their own; their chunks start after cached positions of
    # their own (a copied partial block: 27 and 29) or right after the prefix (24), and some span several blocks
    tables = [torch.tensor([0, 1, 2, 10 + 5 * i, 11 + 5 * i, 12 + 5 * i, 13 + 5 * i]) for i in range(3)]
    starts, counts = [27, 24, 29], [5, 17, 1]
    queries = [torch.randn(n, heads, head_dim, generator=generator).to(dtype) for n in counts]
    together = shared_prefix_attention(torch, queries, tables, keys, values, starts, shared, head_dim**-0.5)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    for q, table, start, attended in zip(queries, tables, starts, together):
        alone = chunk_attention(torch, q, table, keys, values, start)
        assert attended.shape == alone.shape and attended.dtype == dtype
        torch.testing.assert_close(attended.float(), alone.float(), atol=tolerance, rtol=tolerance)


def test_groups_are_chunks_that_begin_with_the_same_blocks_before_their_queries():
    size = 4
    blocks = [
        [7, 8, 9, 1],  # three chunks behind blocks 7, 8, 9
        [7, 8, 9, 2],
        [7, 8, 3, 4],  # shares only 7, 8 with them
        [5, 6],  # alone behind its own blocks
        [7, 8, 9, 11],  # shares 7, 8, 9 but its chunk starts inside block 1: not a member
    ]
    starts = [13, 12, 9, 0, 5]
    assert shared_prefix_groups(blocks, starts, size) == [(2, [0, 1, 2])]
    assert shared_prefix_groups(blocks[:2], starts[:2], size) == [(3, [0, 1])]
    assert MIN_SHARED_BLOCKS == 2 and shared_prefix_groups([[7, 8, 1], [7, 9, 2]], [9, 9], size) == []
