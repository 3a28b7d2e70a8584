"""Where servelm caches what it builds once (tiny test models, converted checkpoints, rewritten graphs):
``SERVELM_CACHE``, else ~/.cache/servelm."""

from __future__ import annotations

import os


def default_cache_dir() -> str:
    """The cache directory (not created here)."""
    return os.environ.get("SERVELM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "servelm")
