"""How many CPU threads a model computes with when none is asked for.

A model whose weights are large is compute-bound: its steps take tens of milliseconds and the serving
process has little to do meanwhile, so it gets every core. A small model's steps are short and the
serving process (HTTP, framing, one socket write per token) needs a core of its own, so it gets half.
"""

from __future__ import annotations

import os

LARGE_MODEL_BYTES = 64 * 2**20  # weights from this size on are compute-bound on a CPU


def default_threads(weight_bytes: int) -> int:
    """Threads for a model with ``weight_bytes`` of weights: all cores when large, else half (at least 1)."""
    cores = os.cpu_count() or 2
    return cores if weight_bytes >= LARGE_MODEL_BYTES else max(1, cores // 2)
