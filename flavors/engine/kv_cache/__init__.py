"""The KV cache the scheduler drives: rows of per-layer buffers (``rows.py``) and the prefix cache of prompt blocks
(``prefix.py``)."""
