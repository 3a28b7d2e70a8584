"""The running batch's KV cache: per layer, [rows, kv_heads, columns, head_dim] buffers with spare columns.

transformers' DynamicLayer appends a decode step's keys and values with ``torch.cat``, copying the whole
layer every step. Here each layer is a view of a buffer with room to the right, so a decode step writes its
column in place; the batcher copies only when it repacks the batch (newcomers joining, finished rows
leaving), and a buffer that runs out of room doubles.
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import Cache, DynamicLayer

SPARE_COLUMNS = 32  # room for decode steps between repacks


class SlackLayer(DynamicLayer):
    """A DynamicLayer whose ``keys`` / ``values`` are the used columns of larger zeroed buffers."""

    def __init__(self, key_buffer: Any, value_buffer: Any, used: int):
        super().__init__()
        self.dtype, self.device = key_buffer.dtype, key_buffer.device
        self.is_initialized = True
        self._key_buffer, self._value_buffer = key_buffer, value_buffer  # [rows, heads, capacity, dim]
        self._set_used(used)

    def _set_used(self, used: int) -> None:
        self.used = used
        self.keys = self._key_buffer[:, :, :used]
        self.values = self._value_buffer[:, :, :used]

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """Write the new columns after the used ones (doubling the buffers when full); return all used columns."""
        new = key_states.shape[-2]
        if self.used + new > self._key_buffer.shape[2]:
            self._key_buffer = _with_room(self._key_buffer, self.used, max(new, self.used))
            self._value_buffer = _with_room(self._value_buffer, self.used, max(new, self.used))
        self._key_buffer[:, :, self.used : self.used + new] = key_states
        self._value_buffer[:, :, self.used : self.used + new] = value_states
        self._set_used(self.used + new)
        return self.keys, self.values


def pack_rows(parts: list[Any], width: int, spare: int = SPARE_COLUMNS) -> Any:
    """One zeroed buffer [sum of rows, heads, width + spare, dim] holding each part [rows, heads, columns,
    dim] right-aligned at column ``width`` (the zeros on the left are padding the attention mask hides)."""
    import torch

    first = parts[0]
    rows = sum(p.shape[0] for p in parts)
    buffer = torch.zeros((rows, first.shape[1], width + spare, first.shape[3]), dtype=first.dtype, device=first.device)
    row = 0
    for part in parts:
        buffer[row : row + part.shape[0], :, width - part.shape[2] : width] = part
        row += part.shape[0]
    return buffer


def running_cache(layers: list[tuple[Any, Any]], width: int) -> Cache:
    """A Cache over per-layer (key buffer, value buffer) pairs whose first ``width`` columns are in use."""
    return Cache(layers=[SlackLayer(keys, values, width) for keys, values in layers])


def _with_room(buffer: Any, used: int, extra: int) -> Any:
    import torch

    grown = torch.zeros((buffer.shape[0], buffer.shape[1], used + extra, buffer.shape[3]), dtype=buffer.dtype, device=buffer.device)
    grown[:, :, :used] = buffer[:, :, :used]
    return grown
