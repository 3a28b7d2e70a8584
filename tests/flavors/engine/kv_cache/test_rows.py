"""The KV rows a runner keeps (``RowCache``), here over numpy buffers as the onnx runner has them."""

from __future__ import annotations

import numpy as np

from servelm.flavors.engine.kv_cache.rows import LENGTH_STEP, NumpyRowCache
from servelm.flavors.engine.memory import trim_heap, zeroed_array


def rows(max_rows: int = 8) -> NumpyRowCache:
    return NumpyRowCache(layers=2, kv_heads=1, head_dim=2, context_length=4 * LENGTH_STEP, max_rows=max_rows)


def fill(cache: NumpyRowCache, row: int, length: int, value: float) -> None:
    for buffer in cache.keys + cache.values:
        buffer[row, :, :length] = value


def test_growing_keeps_every_row_and_position_written():
    cache = rows()
    cache.ensure(2, 10)
    fill(cache, 0, 10, 1.0)
    fill(cache, 1, 10, 2.0)
    cache.ensure(3, 10)  # more rows: doubled
    assert cache.rows == 4 and cache.length == LENGTH_STEP
    cache.ensure(3, LENGTH_STEP + 1)  # longer rows
    assert cache.length == 2 * LENGTH_STEP
    for buffer in cache.keys + cache.values:
        assert (buffer[0, :, :10] == 1.0).all() and (buffer[1, :, :10] == 2.0).all()
        assert (buffer[:, :, 10:] == 0).all()


def test_a_longer_cache_drops_the_rows_past_those_asked_for():
    """Rows above the scheduler's are empty: growing the length does not carry (and pay for) them."""
    cache = rows()
    cache.ensure(8, 10)
    fill(cache, 1, 10, 3.0)
    cache.ensure(2, 3 * LENGTH_STEP)
    assert (cache.rows, cache.length) == (2, 3 * LENGTH_STEP)
    assert all(b.shape == (2, 1, 3 * LENGTH_STEP, 2) and (b[1, :, :10] == 3.0).all() for b in cache.keys)
    cache.ensure(2, 10)  # room enough: nothing changes
    assert cache.rows == 2


def test_blocks_saved_from_one_row_load_into_another():
    cache = rows()
    cache.ensure(3, 10)
    for buffer in cache.keys + cache.values:
        buffer[0, 0, :8, 0] = np.arange(8)
    blocks = [cache.save_block(0, start, 4)[0] for start in (0, 4)]
    for row in (1, 2):  # the second load reuses the first one's joined blocks
        cache.load_blocks(blocks, row, 0, 8)
        assert all((b[row, 0, :8, 0] == np.arange(8)).all() for b in cache.keys + cache.values)
    cache.load_blocks(blocks[1:], 1, 0, 4)  # other blocks: joined anew
    assert (cache.keys[0][1, 0, :4, 0] == np.arange(4, 8)).all()
    cache.load_blocks(blocks, 2, 0, 6)  # the last block in part: the positions after it are left alone
    cache.keys[0][2, 0, 6:8, 0] = -1
    cache.load_blocks(blocks, 2, 0, 6)
    assert cache.keys[0][2, 0, :8, 0].tolist() == [0, 1, 2, 3, 4, 5, -1, -1]


def test_zeroed_arrays_are_writable_zeros():
    array = zeroed_array((3, 5), np.float32)
    assert array.shape == (3, 5) and array.dtype == np.float32 and not array.any()
    array[1] = 7.0
    assert array.sum() == 35.0
    trim_heap()
