"""A KV cache of rows, for a runner whose attention cannot read blocks (the onnx runner on a whole exported graph:
its GroupQueryAttention takes per layer a key and a value buffer [rows, kv_heads, positions, head_dim], one sequence
per row, positions left-aligned, and one call decodes rows ``0 .. n-1``). The scheduler still sizes and bounds it in
blocks; here each sequence gets a row when its prompt starts, the decoding sequences are gathered into the first rows
before a decode call (moving a row's KV only when one of them sits above), and a row whose sequence is gone is free.
Buffers are numpy arrays from ``zeroed_array`` (committed as they are written), grown as sequences need room and
released when none is left."""

from __future__ import annotations

from typing import Any, Optional

from ..memory import zeroed_array

LENGTH_STEP = 256  # positions are allocated in multiples of this


class SequenceRows:
    """Rows of KV buffers and which sequence holds each."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, context_length: int, dtype: Any):
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.context_length = context_length
        self.dtype = dtype
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.rows = 0  # allocated
        self.length = 0  # allocated positions per row
        self.holder: list[Optional[int]] = []  # by row: the sequence in it
        self.row_of: dict[int, int] = {}
        self.lengths: dict[int, int] = {}  # a sequence's positions written

    def row(self, seq_id: int, length: int) -> int:
        """The row of ``seq_id`` (a free one taken for a sequence new here) with room for ``length`` positions."""
        row = self.row_of.get(seq_id)
        if row is None:
            row = next((r for r, held in enumerate(self.holder) if held is None), len(self.holder))
            if row == len(self.holder):
                self.holder.append(None)
            self.holder[row], self.row_of[seq_id] = seq_id, row
        self._ensure(len(self.holder), length)
        self.lengths[seq_id] = max(self.lengths.get(seq_id, 0), length)
        return row

    def gather(self, seq_ids: list[int], length: int) -> list[int]:
        """Put ``seq_ids`` (each already holding a row) in rows ``0 .. len(seq_ids)-1``, in some order, with room
        for ``length`` positions; returns each one's row."""
        count, wanted = len(seq_ids), set(seq_ids)
        self._ensure(len(self.holder), length)
        above = [s for s in seq_ids if self.row_of[s] >= count]
        for target in range(count):
            if not above:
                break
            if self.holder[target] not in wanted:
                self._exchange(above.pop(), target)
        return [self.row_of[s] for s in seq_ids]

    def free(self, seq_id: int) -> None:
        row = self.row_of.pop(seq_id, None)
        self.lengths.pop(seq_id, None)
        if row is not None:
            self.holder[row] = None
        while self.holder and self.holder[-1] is None:
            self.holder.pop()
        if not self.row_of:
            self.release()

    def release(self) -> None:
        self.keys, self.values, self.rows, self.length = [], [], 0, 0
        self.holder, self.row_of, self.lengths = [], {}, {}

    def _exchange(self, seq_id: int, target: int) -> None:
        """Move ``seq_id``'s KV to row ``target``, swapping with the sequence there (if any)."""
        source = self.row_of[seq_id]
        other = self.holder[target]
        longest = max(self.lengths[seq_id], self.lengths.get(other, 0) if other is not None else 0)
        for cache in self.keys + self.values:
            if other is None:
                cache[target, :, :longest] = cache[source, :, :longest]
            else:
                kept = cache[target, :, :longest].copy()
                cache[target, :, :longest] = cache[source, :, :longest]
                cache[source, :, :longest] = kept
        self.holder[target], self.holder[source] = seq_id, other
        self.row_of[seq_id] = target
        if other is not None:
            self.row_of[other] = source

    def _ensure(self, rows: int, length: int) -> None:
        """Room for ``rows`` rows (more in doubling steps) of ``length`` positions (in steps of 256), keeping
        the cache; buffers are replaced one at a time, so growing needs one layer's buffer beyond the cache."""
        length = max(self.length, min(self.context_length, -(-length // LENGTH_STEP) * LENGTH_STEP))
        if rows <= self.rows and length == self.length:
            return
        rows = max(rows, 2 * self.rows) if rows > self.rows else self.rows
        shape = (rows, self.kv_heads, length, self.head_dim)
        kept = min(rows, self.rows)
        for buffers in (self.keys, self.values):
            if not buffers:
                buffers.extend(zeroed_array(shape, self.dtype) for _ in range(self.layers))
                continue
            for i, old in enumerate(buffers):
                new = zeroed_array(shape, self.dtype)
                new[:kept, :, : self.length] = old[:kept]
                buffers[i] = new
        self.rows, self.length = rows, length
