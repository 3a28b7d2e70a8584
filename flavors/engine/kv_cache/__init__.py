"""The KV cache the scheduler drives: the paged pool's blocks, their tables and the prefix cache over them
(``blocks.py``), and rows per sequence for runners that cannot read blocks (``rows.py``)."""
