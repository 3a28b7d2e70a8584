"""The KV cache of a runner: per layer a key and a value buffer [rows, kv_heads, positions, head_dim], one
sequence per row, positions left-aligned; grown as sequences need room, freed when none is left. The
array library (torch, numpy) is the subclass's: it says how to allocate, copy and stack buffers."""

from __future__ import annotations

from typing import Any, Optional

from ..memory import zeroed_array

LENGTH_STEP = 256  # positions are allocated in multiples of this


class RowCache:
    """Rows of KV buffers and the row operations the scheduler asks of a runner (``ModelRunner``)."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, context_length: int, max_rows: int):
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.context_length = context_length
        self.max_rows = max_rows
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.rows = 0  # allocated
        self.length = 0  # allocated positions per row
        self._joined: Optional[tuple[list[Any], Any]] = None  # the last blocks loaded, and them joined

    # ------------------------------------------------------------------ what the array library provides
    def _zeros(self, shape: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def _copy(self, part: Any) -> Any:
        raise NotImplementedError

    def _stack(self, parts: list[Any]) -> tuple[Any, int]:
        """The parts stacked into one new buffer from ``_zeros`` (on CPU, a mapping of its own: the prefix
        cache evicts blocks all the time, and a freed mapping goes back to the system at once where freed
        heap blocks would stay with the process, scattered between live allocations), and its size in bytes."""
        block = self._zeros((len(parts), *parts[0].shape))
        for i, part in enumerate(parts):
            block[i] = part
        return block, block.nbytes

    def _join(self, blocks: list[Any]) -> Any:
        """Saved blocks [2 * layers, kv_heads, size, head_dim] joined along their positions (axis 2), into a
        new buffer from ``_zeros``."""
        first = blocks[0]
        joined = self._zeros((first.shape[0], first.shape[1], sum(b.shape[2] for b in blocks), first.shape[3]))
        start = 0
        for block in blocks:
            joined[:, :, start : start + block.shape[2]] = block
            start += block.shape[2]
        return joined

    # ------------------------------------------------------------------ the rows
    def ensure(self, rows: int, length: int) -> None:
        """Make room for ``rows`` rows (allocating more in doubling steps, up to ``max_rows``) of ``length``
        positions (in steps of 256), keeping the first ``rows`` rows' cache. Rows past ``rows`` hold nothing
        (the scheduler uses rows from 0 up), so a reallocation for length drops them; buffers are replaced
        one at a time, so growing needs one layer's buffer beyond the cache, not a second cache."""
        wanted = min(self.max_rows, rows)
        length = max(self.length, min(self.context_length, -(-length // LENGTH_STEP) * LENGTH_STEP))
        if wanted <= self.rows and length == self.length:
            return
        rows = min(self.max_rows, max(wanted, 2 * self.rows)) if wanted > self.rows else wanted
        shape = (rows, self.kv_heads, length, self.head_dim)
        kept = min(rows, self.rows)
        for buffers in (self.keys, self.values):
            if not buffers:
                buffers.extend(self._zeros(shape) for _ in range(self.layers))
                continue
            for i, old in enumerate(buffers):
                new = self._zeros(shape)
                new[:kept, :, : self.length] = old[:kept]
                buffers[i] = new
        self.rows, self.length = rows, length

    def release(self) -> None:
        self.keys, self.values, self.rows, self.length = [], [], 0, 0
        self._joined = None

    def move(self, src: int, dst: int, length: int) -> None:
        for cache in self.keys + self.values:
            cache[dst, :, :length] = cache[src, :, :length]

    def swap(self, a: int, b: int, length: int) -> None:
        for cache in self.keys + self.values:
            kept = self._copy(cache[a, :, :length])
            cache[a, :, :length] = cache[b, :, :length]
            cache[b, :, :length] = kept

    def save_block(self, row: int, start: int, size: int) -> tuple[Any, int]:
        """A copy of positions ``start .. start+size`` of ``row``: [2 * layers, kv_heads, size, head_dim], and its
        bytes."""
        return self._stack([c[row, :, start : start + size] for c in self.keys + self.values])

    def load_blocks(self, blocks: list[Any], row: int, start: int, length: int) -> None:
        """Write the first ``length`` positions of saved blocks back, one after another from ``start`` of
        ``row`` (one copy per cache buffer for the whole blocks; a last block used in part is written
        apart). The joined whole blocks of the last load are kept: prompts that arrive together load the
        same prefix."""
        if not blocks or length <= 0:
            return
        whole = min(len(blocks), length // blocks[0].shape[2])
        if whole:
            joined = self._joined_blocks(blocks[:whole])
            size = joined.shape[2]
            for cache, part in zip(self.keys + self.values, joined):
                cache[row, :, start : start + size] = part
            start, length = start + size, length - size
        if length > 0 and whole < len(blocks):
            for cache, part in zip(self.keys + self.values, blocks[whole]):
                cache[row, :, start : start + length] = part[:, :length]

    def _joined_blocks(self, blocks: list[Any]) -> Any:
        """``blocks`` joined along positions (the last join is reused when the same blocks come again)."""
        if len(blocks) == 1:
            return blocks[0]
        if (
            self._joined is not None
            and len(self._joined[0]) == len(blocks)
            and all(a is b for a, b in zip(self._joined[0], blocks))
        ):
            return self._joined[1]
        joined = self._join(blocks)
        self._joined = (list(blocks), joined)
        return joined


class NumpyRowCache(RowCache):
    """A ``RowCache`` in numpy buffers of ``dtype`` (the onnx runner's)."""

    dtype: Any = "float32"

    def _zeros(self, shape: tuple[int, ...]) -> Any:
        return zeroed_array(shape, self.dtype)

    def _copy(self, part: Any) -> Any:
        return part.copy()
