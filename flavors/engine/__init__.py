"""servelm's own LLM engine core: continuous batching (``scheduler.py``) over model runners (``runners/``),
their KV cache (``kv_cache/``), attention kernels (``attention/``), samplers (``sample/``) and grammar masks
(``structured.py``). ``batcher.py`` is the contract every engine's batcher keeps for pyfunc predict and the
serving engines; ``hf_batcher.py`` and ``genai_batcher.py`` build batchers for the transformers and onnx flavors.
``numba_cache.py`` compiles the numba kernels so that every process runs the same code.

This package imports no torch or onnxruntime itself: the runners do, when a flavor builds them."""

from .batcher import Batcher, Sequence, StepOutput
from .sample.params import DEFAULT_MAX_TOKENS, SamplingParams, generation_defaults, sampling_params

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Batcher",
    "SamplingParams",
    "Sequence",
    "StepOutput",
    "generation_defaults",
    "sampling_params",
]
