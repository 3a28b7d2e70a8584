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
    return np.frombuffer(mmap.mmap(-1, max(1, count * dtype.itemsize)), dtype, count=count).reshape(shape)


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
