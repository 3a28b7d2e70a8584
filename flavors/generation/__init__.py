"""What every LLM generation path shares, in plain Python (no torch, no onnxruntime): sampling
parameters, the batcher contract, incremental detokenization, stop strings and chat template inputs."""

from .batcher import Batcher, Sequence, StepOutput
from .detokenizer import IncrementalDetokenizer, rust_tokenizer
from .sampling import SamplingParams, sampling_params
from .stop import StopChecker
from .templates import template_inputs

__all__ = ["Batcher", "IncrementalDetokenizer", "SamplingParams", "Sequence", "StepOutput", "StopChecker", "rust_tokenizer",
           "sampling_params", "template_inputs"]
