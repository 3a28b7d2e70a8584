"""Text around generation that every LLM path shares, in plain Python (no torch, no onnxruntime): chat
templates and codecs (prompts to token ids), incremental detokenization, stop strings and tool-call parsing.
The engine core (scheduler, KV cache, samplers) is ``servelm.flavors.engine``."""

from .detokenizer import IncrementalDetokenizer, rust_tokenizer
from .sequence_text import SequenceText
from .stop import StopChecker
from .templates import template_inputs

__all__ = [
    "IncrementalDetokenizer",
    "SequenceText",
    "StopChecker",
    "rust_tokenizer",
    "template_inputs",
]
