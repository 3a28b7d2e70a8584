"""Prefix caching: the KV of prompt blocks computed once and reused by later prompts that start the same way.

A prompt is cut into blocks of ``block_size`` tokens; block i is keyed by a hash of block i-1's key and
its own tokens (so a key names the whole prefix up to it, as in vLLM). After a sequence's prompt is
prefilled, its full blocks are saved (a copy of their KV, made by the runner); a new prompt walks its
blocks while they are cached and loads them instead of computing them. The store is bounded in bytes
and evicts the least recently used blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional


def block_keys(token_ids: list[int], block_size: int) -> list[int]:
    """The chained keys of each full block of ``token_ids``."""
    keys = []
    previous = 0
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        previous = hash((previous, tuple(token_ids[start : start + block_size])))
        keys.append(previous)
    return keys


class PrefixCache:
    """Saved KV blocks by key, least recently used first out once over ``max_bytes``."""

    def __init__(self, block_size: int, max_bytes: int):
        self.block_size = block_size
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[int, tuple[Any, int, tuple[int, ...]]] = (
            OrderedDict()
        )  # key -> (runner's saved block, bytes, tokens)
        self.bytes = 0
        self.hits = 0  # tokens served from the cache
        self.queries = 0  # prompt tokens looked up

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup(self, keys: list[int], token_ids: list[int]) -> list[Any]:
        """The saved blocks of the longest cached prefix of ``token_ids``, leaving at least one prompt
        token to compute (its logits start the answer). Each block's tokens are compared too, so a hash
        collision can never hand a prompt someone else's KV."""
        found = []
        size = self.block_size
        for i, key in enumerate(keys[: (len(token_ids) - 1) // size]):
            entry = self._blocks.get(key)
            if entry is None or entry[2] != tuple(token_ids[i * size : (i + 1) * size]):
                break
            self._blocks.move_to_end(key)
            found.append(entry[0])
        self.queries += len(token_ids)
        self.hits += len(found) * self.block_size
        return found

    def __contains__(self, key: int) -> bool:
        return key in self._blocks

    def depth(self, keys: list[int]) -> int:
        """How many leading ``keys`` are saved (a look without counting a hit or touching recency)."""
        for i, key in enumerate(keys):
            if key not in self._blocks:
                return i
        return len(keys)

    def save(self, key: int, tokens: list[int], block: Any, nbytes: int) -> None:
        """Keep ``block`` (the KV of ``tokens``) under ``key``, evicting old blocks past the byte budget."""
        if nbytes > self.max_bytes or key in self._blocks:
            return
        self._blocks[key] = (block, nbytes, tuple(tokens))
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            _, (_, size, _) = self._blocks.popitem(last=False)
            self.bytes -= size

    def hit_rate(self) -> Optional[float]:
        return self.hits / self.queries if self.queries else None
