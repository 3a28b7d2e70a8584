"""The KV rows of a runner whose attention cannot read blocks (``SequenceRows``): a row per sequence, decoding
sequences gathered into the first rows with their KV, buffers grown as needed and released when empty; and the
mapped memory under every cache."""

from __future__ import annotations

import numpy as np

from servelm.flavors.engine.kv_cache.rows import LENGTH_STEP, SequenceRows
from servelm.flavors.engine.memory import block_runs, release_blocks, trim_heap, zeroed_array


def rows() -> SequenceRows:
    return SequenceRows(layers=2, kv_heads=1, head_dim=2, context_length=4 * LENGTH_STEP, dtype=np.float32)


def fill(cache: SequenceRows, row: int, length: int, value: float) -> None:
    for buffer in cache.keys + cache.values:
        buffer[row, :, :length] = value


def test_each_sequence_gets_a_row_and_growing_keeps_what_is_written():
    cache = rows()
    assert cache.row(10, 10) == 0 and cache.row(11, 10) == 1 and cache.row(10, 12) == 0
    fill(cache, 0, 10, 1.0)
    fill(cache, 1, 10, 2.0)
    cache.row(12, 10)  # more rows: doubled
    assert cache.rows == 4 and cache.length == LENGTH_STEP
    cache.row(11, LENGTH_STEP + 1)  # longer rows
    assert cache.length == 2 * LENGTH_STEP
    for buffer in cache.keys + cache.values:
        assert (buffer[0, :, :10] == 1.0).all() and (buffer[1, :, :10] == 2.0).all()
        assert (buffer[:, :, 10:] == 0).all()


def test_decoding_sequences_are_gathered_into_the_first_rows_with_their_kv():
    cache = rows()
    for seq in (1, 2, 3):
        cache.row(seq, 8)
        fill(cache, cache.row_of[seq], 8, float(seq))
    cache.free(1)  # row 0 is free; sequences 2 and 3 sit in rows 1 and 2
    placed = cache.gather([3, 2], 8)
    assert sorted(placed) == [0, 1]
    for seq, row in zip([3, 2], placed):
        assert all((b[row, :, :8] == float(seq)).all() for b in cache.keys + cache.values)
    assert cache.row(4, 5) == 2  # a new sequence takes a free row


def test_the_last_sequence_gone_releases_the_buffers():
    cache = rows()
    cache.row(1, 10)
    cache.free(1)
    assert cache.keys == [] and cache.rows == 0 and cache.holder == []


def test_zeroed_arrays_are_writable_zeros_whose_blocks_go_back():
    array = zeroed_array((4, 1024), np.float32)  # 4 KiB per block: a page each
    assert array.shape == (4, 1024) and array.dtype == np.float32 and not array.any()
    array[:] = 7.0
    assert block_runs([5, 1, 2, 7, 6]) == [(1, 2), (5, 7)]
    release_blocks(array, block_runs([1, 2]))
    assert (array[1:3] == 0).all() and (array[0] == 7.0).all() and (array[3] == 7.0).all()
    trim_heap()
