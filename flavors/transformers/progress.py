"""transformers' progress bars (loading weights, dequantizing a GGUF file) where a person watches a terminal,
and none in logs, where each redraw would be a line of noise (the server logs a line every few seconds
while a model loads instead: ``serving/state.py``)."""

from __future__ import annotations

import sys


def show_progress_bars() -> bool:
    """Turn transformers' progress bars on where stderr is a terminal, off elsewhere; returns which."""
    from transformers.utils import logging as hf_logging

    interactive = sys.stderr.isatty()
    if interactive:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()
    return interactive
