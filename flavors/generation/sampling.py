"""OpenAI request parameters as ``SamplingParams``: how one sequence picks its tokens and when it stops."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from servelm.agents import ChatCompletionRequest

@dataclass
class SamplingParams:
    """How one sequence picks its tokens and when it stops (OpenAI's parameters)."""

    max_tokens: int = 256
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    seed: Optional[int] = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False


def sampling_params(request: ChatCompletionRequest, prompt_length: int, context_length: int, defaults: Optional[dict[str, Any]] = None) -> SamplingParams:
    """SamplingParams for one request; the token cap defaults to what is left of the context."""
    defaults = defaults or {}
    room = max(1, context_length - prompt_length)
    limit = request.token_limit() or defaults.get("max_tokens") or room
    temperature = request.temperature if request.temperature is not None else defaults.get("temperature", 1.0)
    return SamplingParams(
        max_tokens=min(int(limit), room),
        temperature=float(temperature),
        top_p=float(request.top_p if request.top_p is not None else defaults.get("top_p", 1.0)),
        top_k=int(request.top_k if request.top_k is not None else defaults.get("top_k", 0)),
        seed=request.seed,
        stop=list(request.stop or defaults.get("stop") or []),
        ignore_eos=bool((request.model_extra or {}).get("ignore_eos", defaults.get("ignore_eos", False))),  # vLLM's extension
    )


