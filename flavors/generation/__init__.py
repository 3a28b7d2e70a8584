"""What every LLM generation path shares, in plain Python (no torch, no onnxruntime): sampling
parameters, the batcher contract, incremental detokenization, stop strings and chat template inputs."""

from .batcher import Batcher, Sequence, StepOutput
from .detokenizer import IncrementalDetokenizer, rust_tokenizer
from .sampling import DEFAULT_MAX_TOKENS, SamplingParams, generation_defaults, sampling_params
from .stop import StopChecker
from .templates import template_inputs

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Batcher",
    "IncrementalDetokenizer",
    "SamplingParams",
    "Sequence",
    "StepOutput",
    "StopChecker",
    "generation_defaults",
    "rust_tokenizer",
    "sampling_params",
    "template_inputs",
]
