"""Text around generation that every LLM path shares, in plain Python (no torch, no onnxruntime): chat
templates and codecs (prompts to token ids), incremental detokenization, stop strings and tool-call parsing.
The engine core (scheduler, KV cache, samplers) is ``servelm.flavors.engine``."""

from .detokenizer import IncrementalDetokenizer, rust_tokenizer
from .stop import StopChecker
from .templates import template_inputs

__all__ = [
    "IncrementalDetokenizer",
    "StopChecker",
    "rust_tokenizer",
    "template_inputs",
]
