"""The block pool: blocks handed out and given back, the prefix cache over the same blocks (whole blocks by
chained key, shared by reference; a last block matched by its first tokens), and what is kept once unreferenced."""

import pytest

from servelm.flavors.engine.kv_cache.blocks import BlockPool, block_keys


def computed(pool: BlockPool, token_ids: list[int]) -> list[int]:
    """A sequence that computed ``token_ids`` into blocks of its own, registered them, and ended."""
    size = pool.block_size
    blocks = pool.allocate(-(-len(token_ids) // size))
    keys = block_keys(token_ids, size)
    for i, key in enumerate(keys):
        pool.register(blocks[i], key, token_ids[i * size : (i + 1) * size], keys[i - 1] if i else 0)
    pool.release(blocks)
    return blocks


def test_blocks_are_handed_out_and_come_back():
    pool = BlockPool(4, 2, cached_limit=0)
    first = pool.allocate(3)
    assert len(set(first)) == 3 and pool.free() == 1 and pool.used() == 3
    with pytest.raises(MemoryError):
        pool.allocate(2)
    pool.release(first)
    assert pool.free() == 4
    assert pool.allocate(1) == [first[0]]  # the last freed is reused first: its memory is warm


def test_whole_blocks_are_shared_by_reference_then_the_start_of_the_block_after_them():
    pool = BlockPool(16, 4, cached_limit=16)
    long = computed(pool, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    other = computed(pool, [1, 2, 3, 4, 5, 6, 0, 0])
    assert other[0] != long[0]  # the first block's key was cached already: the first sequence's block keeps it
    prompt = [1, 2, 3, 4, 5, 6, 7, 20, 21]
    hit = pool.lookup(block_keys(prompt, 4), prompt)
    assert hit.blocks == [long[0]]  # one whole block, by reference
    assert (hit.partial, hit.partial_tokens) == (long[1], 3)  # then 5 6 7 of the block that shares the most
    assert pool.hits == 7 and pool.queries == 9
    before = pool.free()
    pool.share(hit.blocks)
    assert pool.free() == before - 1  # referenced again: not evictable while a sequence reads it
    pool.release(hit.blocks)
    assert pool.free() == before


def test_a_prompt_seen_before_leaves_its_last_token_to_compute():
    pool = BlockPool(8, 4, cached_limit=8)
    prompt = [5, 6, 7, 8, 9, 10, 11, 12]
    blocks = computed(pool, prompt)
    hit = pool.lookup(block_keys(prompt, 4), prompt)
    assert hit.blocks == [blocks[0]] and (hit.partial, hit.partial_tokens) == (blocks[1], 3)
    short = [5, 6, 7]
    hit = pool.lookup(block_keys(short, 4), short)
    assert hit.blocks == [] and hit.partial_tokens == 2


def test_no_shared_first_token_finds_nothing():
    pool = BlockPool(4, 4, cached_limit=4)
    computed(pool, [1, 2, 3, 4])
    hit = pool.lookup([], [9, 2, 3])
    assert hit.blocks == [] and hit.partial == -1 and hit.partial_tokens == 0


def test_a_hash_collision_never_hands_out_other_tokens():
    pool = BlockPool(4, 2, cached_limit=4)
    blocks = pool.allocate(1)
    pool.register(blocks[0], 1234, [1, 2], 0)
    pool.release(blocks)
    assert pool.lookup([1234], [3, 4, 5]).blocks == []


def test_unreferenced_cached_blocks_are_kept_up_to_the_limit_least_recently_used_out():
    pool = BlockPool(8, 2, cached_limit=2)
    head, _ = computed(pool, [1, 2, 3, 4])
    computed(pool, [7, 8])  # three cached blocks, two kept: a prefix's tail goes first ([3, 4]), its head stays
    prompt = [1, 2, 3, 4, 5]
    assert pool.lookup(block_keys(prompt, 2), prompt).blocks == [head]
    assert pool.lookup(block_keys([7, 8, 1], 2), [7, 8, 1]).blocks == [pool._block[block_keys([7, 8], 2)[0]]]


def test_cached_blocks_are_evicted_when_a_block_is_needed():
    pool = BlockPool(3, 2, cached_limit=3)
    computed(pool, [1, 2, 3, 4, 5, 6])
    assert pool.free() == 3  # cached but unreferenced: still free to hand out
    taken = pool.allocate(3)
    assert len(taken) == 3
    prompt = [1, 2, 3, 4, 5, 6, 7]
    assert pool.lookup(block_keys(prompt, 2), prompt).blocks == []  # their prefixes are forgotten
    pool.release(taken)
    assert pool.free() == 3


def test_clearing_forgets_every_unreferenced_prefix():
    pool = BlockPool(4, 2, cached_limit=4)
    computed(pool, [1, 2, 3, 4])
    pool.clear_cached()
    assert pool.depth(block_keys([1, 2, 3, 4], 2)) == 0 and len(pool.fresh_blocks()) == 4
