"""Memory for KV caches that costs what is written, not what is reserved.

A cache is allocated for the longest rows it may hold, but most of it is written only as sequences grow.
An anonymous memory mapping gives pages that read as zero and take no physical memory until first
written, and goes back to the system as soon as its last reference is dropped (a heap allocation of
the same size may stay with the process). ``trim_heap`` hands back what freed heap memory the C library
is still holding, once an engine goes idle.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from functools import lru_cache
from typing import Any


def zeroed_array(shape: tuple[int, ...], dtype: Any) -> Any:
    """A writable numpy array of zeros backed by its own anonymous mapping (committed page by page as
    it is written; unmapped when the array and every view of it are gone)."""
    import numpy as np

    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    size = max(1, count * dtype.itemsize)
    private = getattr(mmap, "MAP_PRIVATE", None)  # private: its pages can be handed back (``release_blocks``)
    mapping = mmap.mmap(-1, size, flags=private | mmap.MAP_ANONYMOUS) if private is not None else mmap.mmap(-1, size)
    return np.frombuffer(mapping, dtype, count=count).reshape(shape)


def block_runs(blocks: list[int]) -> list[tuple[int, int]]:
    """``blocks`` as runs of consecutive indices: (first, last) pairs, in order."""
    import numpy as np

    if not blocks:
        return []
    ordered = np.unique(np.asarray(blocks, dtype=np.int64))
    breaks = np.flatnonzero(np.diff(ordered) != 1)
    firsts = np.concatenate([ordered[:1], ordered[breaks + 1]])
    lasts = np.concatenate([ordered[breaks], ordered[-1:]])
    return list(zip(firsts.tolist(), lasts.tolist()))


def release_blocks(array: Any, runs: list[tuple[int, int]]) -> None:
    """Hand the memory of blocks (indices along the first axis of ``array``, an array from ``zeroed_array``, given as
    ``block_runs``) back to the system: the whole pages inside them read as zero again and take no memory until
    written."""
    mapping = array
    while mapping is not None and not isinstance(mapping, mmap.mmap):
        mapping = getattr(mapping, "base", None) if not isinstance(mapping, memoryview) else mapping.obj
    if mapping is None or not runs or not hasattr(mmap, "MADV_DONTNEED"):
        return
    per_block = array.nbytes // array.shape[0]
    page = mmap.PAGESIZE
    for first, last in runs:
        start = -(-first * per_block // page) * page
        stop = (last + 1) * per_block // page * page
        if stop > start:
            mapping.madvise(mmap.MADV_DONTNEED, start, stop - start)


@lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def trim_heap() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; nothing elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
