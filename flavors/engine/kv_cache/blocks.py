"""The KV cache as fixed-size blocks the scheduler hands out (vLLM's KVCacheManager, in plain Python).

A runner holds, per layer, one pool of ``num_blocks`` blocks of ``block_size`` positions; a sequence holds a
block table (the pool's blocks its positions live in, in order) and takes a block each time it crosses a block
boundary. The scheduler admits a sequence only when the blocks of its next step are free, and preempts one when
decoding runs out, so the memory a server takes is the budget it was given, whatever its prompts.

The prefix cache is the same pool: a full block of a prompt is registered under a key chaining the keys of
the blocks before it (so a key names the whole prefix up to it) and stays after its sequence ends, unreferenced
but cached. A later prompt that starts the same way takes those blocks by reference (no copy) and computes only
what follows; where the walk stops, a cached block after the same prefix whose first tokens are the prompt's
next ones gives those positions too (they are copied into the prompt's own block: a shared system prompt rarely
ends on a block boundary). Unreferenced cached blocks are evicted least recently used first when a block is
needed, or when more of them are kept than ``cached_limit``.

Free blocks that hold no cached prefix are reused last-freed first: on a CPU the pool is memory the system
commits page by page as it is written, so reusing warm blocks keeps a server's memory near what it has used at
once, not the whole budget.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import islice

#: cached blocks after one prefix compared with a prompt's next tokens (the most recently used first)
TAIL_CANDIDATES = 64


def block_keys(token_ids: list[int], block_size: int) -> list[int]:
    """The chained keys of each full block of ``token_ids``."""
    keys = []
    previous = 0
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        previous = hash((previous, tuple(token_ids[start : start + block_size])))
        keys.append(previous)
    return keys


@dataclass
class PrefixHit:
    """What the prefix cache holds of a prompt: ``blocks`` (full blocks, taken by reference) and, after them,
    ``partial`` (a cached block whose first ``partial_tokens`` positions are the prompt's next tokens, or -1)."""

    blocks: list[int]
    partial: int = -1
    partial_tokens: int = 0


class BlockPool:
    """Which of ``num_blocks`` blocks are free, referenced, or cached; the prefix cache's index over them."""

    def __init__(self, num_blocks: int, block_size: int, cached_limit: int):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.cached_limit = cached_limit  # unreferenced cached blocks kept at most (0: no prefix cache)
        self._fresh = list(range(num_blocks - 1, -1, -1))  # free, nothing cached: a stack, lowest first
        self._refs = [0] * num_blocks
        self._evictable: OrderedDict[int, None] = OrderedDict()  # unreferenced cached blocks, least recent first
        self._key: dict[int, int] = {}  # cached block -> its key
        self._tokens: dict[int, tuple[int, ...]] = {}  # cached block -> its tokens
        self._previous: dict[int, int] = {}  # cached block -> the key of the block before it (0: first)
        self._block: dict[int, int] = {}  # key -> cached block
        self._after: dict[int, dict[int, None]] = {}  # a key -> the cached blocks that follow it
        self.hits = 0  # prompt tokens served from the cache
        self.queries = 0  # prompt tokens looked up

    # ------------------------------------------------------------------ counts
    def free(self) -> int:
        """Blocks that can be handed out now (free, or cached and unreferenced)."""
        return len(self._fresh) + len(self._evictable)

    def used(self) -> int:
        """Blocks some sequence references."""
        return self.num_blocks - self.free()

    def hit_rate(self) -> float | None:
        return self.hits / self.queries if self.queries else None

    # ------------------------------------------------------------------ taking and giving back
    def allocate(self, count: int) -> list[int]:
        """``count`` blocks, each referenced once (the caller checked ``free``): free ones first, else the least
        recently used cached ones (their prefix forgotten)."""
        if count > self.free():
            raise MemoryError(f"{count} KV blocks asked for, {self.free()} free")
        taken = []
        for _ in range(count):
            if self._fresh:
                block = self._fresh.pop()
            else:
                block, _ = self._evictable.popitem(last=False)
                self._forget(block)
            self._refs[block] = 1
            taken.append(block)
        return taken

    def share(self, blocks: list[int]) -> None:
        """Reference cached ``blocks`` once more (a prompt that starts as theirs)."""
        for block in blocks:
            if self._refs[block] == 0:
                del self._evictable[block]
            self._refs[block] += 1

    def release(self, blocks: list[int]) -> None:
        """Drop one reference to each of a sequence's ``blocks``: an unreferenced block goes back free, or stays
        cached if it holds a prefix (its last blocks are then the first evicted: a prefix's head is the most
        shared part)."""
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] > 0:
                continue
            if block in self._key:
                self._evictable[block] = None
            else:
                self._fresh.append(block)
        while len(self._evictable) > self.cached_limit:
            block, _ = self._evictable.popitem(last=False)
            self._forget(block)
            self._fresh.append(block)

    def clear_cached(self) -> None:
        """Forget every unreferenced cached prefix (their blocks go back free)."""
        while self._evictable:
            block, _ = self._evictable.popitem(last=False)
            self._forget(block)
            self._fresh.append(block)

    def fresh_blocks(self) -> list[int]:
        """The free blocks that hold nothing anyone may read (a runner may hand their memory back)."""
        return list(self._fresh)

    # ------------------------------------------------------------------ the prefix cache
    def register(self, block: int, key: int, tokens: list[int], previous: int) -> None:
        """Make the full ``block`` (computed for ``tokens``, after the block keyed ``previous``) findable under
        ``key``; a key already cached keeps its block."""
        if self.cached_limit <= 0 or key in self._block or block in self._key:
            return
        self._block[key] = block
        self._key[block] = key
        self._tokens[block] = tuple(tokens)
        self._previous[block] = previous
        self._after.setdefault(previous, {})[block] = None

    def depth(self, keys: list[int]) -> int:
        """How many leading ``keys`` are cached (a look that counts no hit and touches no recency)."""
        for i, key in enumerate(keys):
            if key not in self._block:
                return i
        return len(keys)

    def is_cached(self, key: int) -> bool:
        return key in self._block

    def lookup(self, keys: list[int], token_ids: list[int]) -> PrefixHit:
        """The cached blocks of the longest prefix of ``token_ids`` (leaving at least one token to compute: its
        logits start the answer), and a cached block after them whose tokens start as the prompt's next ones.
        Nothing is referenced yet (``share`` does that). Each block's tokens are compared too, so a hash collision
        can never hand a prompt someone else's KV."""
        size = self.block_size
        found: list[int] = []
        for i, key in enumerate(keys[: (len(token_ids) - 1) // size]):
            block = self._block.get(key)
            if block is None or self._tokens[block] != tuple(token_ids[i * size : (i + 1) * size]):
                break
            self._touch(block)
            found.append(block)
        start = len(found) * size
        rest = token_ids[start : min(start + size, len(token_ids) - 1)]
        partial, common = self._longest_start(keys[len(found) - 1] if found else 0, rest)
        self.queries += len(token_ids)
        self.hits += start + common
        return PrefixHit(found, partial, common)

    def _longest_start(self, previous: int, tokens: list[int]) -> tuple[int, int]:
        """Of the cached blocks after the block keyed ``previous``, the one whose tokens start with the longest
        run of ``tokens``, and that run's length ((-1, 0) when none shares a first token)."""
        best, longest = -1, 0
        for block in islice(reversed(self._after.get(previous, {})), TAIL_CANDIDATES):
            common = 0
            for a, b in zip(self._tokens[block], tokens):
                if a != b:
                    break
                common += 1
            if common > longest:
                best, longest = block, common
        if best >= 0:
            self._touch(best)
        return best, longest

    def _touch(self, block: int) -> None:
        if block in self._evictable:
            self._evictable.move_to_end(block)

    def _forget(self, block: int) -> None:
        key = self._key.pop(block, None)
        if key is None:
            return
        del self._block[key]
        del self._tokens[block]
        previous = self._previous.pop(block)
        siblings = self._after[previous]
        del siblings[block]
        if not siblings:
            del self._after[previous]
