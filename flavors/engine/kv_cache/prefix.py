"""Prefix caching: the KV of prompt blocks computed once and reused by later prompts that start the same way.

A prompt is cut into blocks of ``block_size`` tokens; block i is keyed by a hash of block i-1's key and
its own tokens (so a key names the whole prefix up to it, as in vLLM). After a sequence's prompt is
prefilled, its full blocks are saved (a copy of their KV, made by the runner); a new prompt walks its
blocks while they are cached and loads them instead of computing them. Where the walk stops, a saved
block that follows the same prefix may still start with the prompt's next tokens (a shared system
prompt rarely ends on a block boundary, and the block after it holds its tail and one user's turn): the
positions they have in common are loaded from it too, as a radix cache matches tokens, not blocks. The
store is bounded in bytes and evicts the least recently used blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice
from typing import Any, Optional

#: saved blocks after one prefix compared with a prompt's next tokens (the most recently saved first)
TAIL_CANDIDATES = 64


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
        self._blocks: OrderedDict[int, tuple[Any, int, tuple[int, ...], int]] = (
            OrderedDict()
        )  # key -> (runner's saved block, bytes, tokens, the previous block's key)
        self._after: dict[int, dict[int, None]] = {}  # a block's key -> the keys of the saved blocks after it
        self.bytes = 0
        self.hits = 0  # tokens served from the cache
        self.queries = 0  # prompt tokens looked up

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup(self, keys: list[int], token_ids: list[int]) -> tuple[list[Any], int]:
        """The saved blocks of the longest cached prefix of ``token_ids`` and how many tokens they hold,
        leaving at least one prompt token to compute (its logits start the answer). The last block may
        hold fewer tokens than its size: a saved block after the matched prefix whose first tokens are the
        prompt's next ones. Each block's tokens are compared too, so a hash collision can never hand a
        prompt someone else's KV."""
        found = []
        size = self.block_size
        for i, key in enumerate(keys[: (len(token_ids) - 1) // size]):
            entry = self._blocks.get(key)
            if entry is None or entry[2] != tuple(token_ids[i * size : (i + 1) * size]):
                break
            self._blocks.move_to_end(key)
            found.append(entry[0])
        tokens = len(found) * size
        rest = token_ids[tokens : min(tokens + size, len(token_ids) - 1)]
        block, common = self._longest_start(keys[len(found) - 1] if found else 0, rest)
        if common:
            found.append(block)
            tokens += common
        self.queries += len(token_ids)
        self.hits += tokens
        return found, tokens

    def _longest_start(self, previous: int, tokens: list[int]) -> tuple[Any, int]:
        """Of the saved blocks after the block keyed ``previous``, the one whose tokens start with the
        longest run of ``tokens``, and that run's length (0 when none shares a first token)."""
        best, longest = None, 0
        for key in islice(reversed(self._after.get(previous, {})), TAIL_CANDIDATES):
            saved = self._blocks[key][2]
            common = 0
            for a, b in zip(saved, tokens):
                if a != b:
                    break
                common += 1
            if common > longest:
                best, longest = key, common
        if best is None:
            return None, 0
        self._blocks.move_to_end(best)  # only the block used counts as used
        return self._blocks[best][0], longest

    def __contains__(self, key: int) -> bool:
        return key in self._blocks

    def depth(self, keys: list[int]) -> int:
        """How many leading ``keys`` are saved (a look without counting a hit or touching recency)."""
        for i, key in enumerate(keys):
            if key not in self._blocks:
                return i
        return len(keys)

    def save(self, key: int, tokens: list[int], block: Any, nbytes: int, previous: int = 0) -> None:
        """Keep ``block`` (the KV of ``tokens``) under ``key``, after the block keyed ``previous`` (0 for a
        prompt's first block), evicting old blocks past the byte budget."""
        if nbytes > self.max_bytes or key in self._blocks:
            return
        self._blocks[key] = (block, nbytes, tuple(tokens), previous)
        self._after.setdefault(previous, {})[key] = None
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            evicted, (_, size, _, before) = self._blocks.popitem(last=False)
            self.bytes -= size
            siblings = self._after[before]
            del siblings[evicted]
            if not siblings:
                del self._after[before]

    def hit_rate(self) -> Optional[float]:
        return self.hits / self.queries if self.queries else None
