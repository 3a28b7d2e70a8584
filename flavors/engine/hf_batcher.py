"""The transformers flavor's batcher: the shared continuous-batching ``Scheduler`` over this flavor's
model runner (``runners/llama.py`` for the Llama family, ``runners/hf_forward.py`` for anything else)."""

from __future__ import annotations

import logging
from typing import Any, Optional

from .runners.hf_forward import HFRunner
from .runners.llama import LlamaWeights, TorchRunner, release_model_weights, unsupported_reason
from .scheduler import Scheduler

log = logging.getLogger("servelm.transformers")


def model_runner_factory(model: Any, quantization: Optional[str] = None, release_model: bool = False) -> Any:
    """A function making fresh runners (each with its own KV cache) over ``model``'s weights, laid out
    once (``quantization="int8"``: linear layers in int8); the model's own forward when the Llama-family
    runner cannot run it (an error when quantization was asked for: only that runner quantizes).
    ``release_model``: the model's own copies of the weights the runner laid out anew are freed, so the weights are
    held once (the model can no longer run its own forward; a server never asks it to)."""
    reason = unsupported_reason(model)
    if reason is None:
        weights = LlamaWeights(model, model.dtype, quantization)
        if release_model:
            release_model_weights(model)
        return lambda: TorchRunner(weights)
    if quantization:
        raise ValueError(f"quantization {quantization!r} is not available for this model: {reason}")
    log.warning(
        "running %s through transformers' own forward, one sequence per call (slow under load): %s",
        type(model).__name__,
        reason,
    )
    return lambda: HFRunner(model)


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a sequence: the generation config's, the model config's and the tokenizer's."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


class ContinuousBatcher(Scheduler):
    """A ``Scheduler`` for a loaded Hugging Face model and its tokenizer (``runners`` from
    ``model_runner_factory``, made here when not given so several batchers can share one layout)."""

    def __init__(self, model: Any, tokenizer: Any, max_num_seqs: int = 64, runners: Any = None, **options: Any):
        runners = runners or model_runner_factory(model)
        runner = runners()
        if isinstance(runner, HFRunner):
            options["prefix_cache_bytes"] = 0
        super().__init__(runner, tokenizer, eos_ids(model, tokenizer), max_num_seqs, **options)
