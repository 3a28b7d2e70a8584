"""The prefix cache's store: whole blocks by chained key, a last block matched by its first tokens, the
byte bound."""

from servelm.flavors.engine.kv_cache.prefix import PrefixCache, block_keys


def saved(cache: PrefixCache, token_ids: list[int]) -> list[int]:
    """Save every full block of ``token_ids`` (the block stands for its KV: here, its tokens)."""
    keys = block_keys(token_ids, cache.block_size)
    for i, key in enumerate(keys):
        tokens = token_ids[i * cache.block_size : (i + 1) * cache.block_size]
        cache.save(key, tokens, ("block", *tokens), 10, keys[i - 1] if i else 0)
    return keys


def test_whole_blocks_then_the_shared_start_of_the_block_after_them():
    cache = PrefixCache(block_size=4, max_bytes=1000)
    saved(cache, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    saved(cache, [1, 2, 3, 4, 5, 6, 0, 0])
    prompt = [1, 2, 3, 4, 5, 6, 7, 20, 21]
    blocks, tokens = cache.lookup(block_keys(prompt, 4), prompt)
    assert tokens == 7  # one whole block, then 5 6 7 of the block that shares the most
    assert blocks == [("block", 1, 2, 3, 4), ("block", 5, 6, 7, 8)]
    assert cache.hits == 7 and cache.queries == 9


def test_a_prompt_seen_before_leaves_its_last_token_to_compute():
    cache = PrefixCache(block_size=4, max_bytes=1000)
    prompt = [5, 6, 7, 8, 9, 10, 11, 12]
    saved(cache, prompt)
    assert cache.lookup(block_keys(prompt, 4), prompt)[1] == 7
    short = [5, 6, 7]
    assert cache.lookup(block_keys(short, 4), short) == ([("block", 5, 6, 7, 8)], 2)


def test_no_shared_first_token_finds_nothing():
    cache = PrefixCache(block_size=4, max_bytes=1000)
    saved(cache, [1, 2, 3, 4])
    assert cache.lookup([], [9, 2, 3]) == ([], 0)


def test_evicted_blocks_are_no_longer_matched():
    cache = PrefixCache(block_size=2, max_bytes=20)  # two blocks
    saved(cache, [1, 2, 3, 4])
    saved(cache, [7, 8])  # evicts the oldest block, [1, 2]
    assert len(cache) == 2 and cache.bytes == 20
    prompt = [1, 2, 3, 4, 5]
    assert cache.lookup(block_keys(prompt, 2), prompt) == ([], 0)
    saved(cache, [9, 9, 9, 9])  # evicts [3, 4] and [7, 8]: nothing after the root but [9, 9]
    assert cache.lookup([], [7, 8, 1]) == ([], 0)
    assert cache.lookup([], [9, 9, 1])[1] == 2
