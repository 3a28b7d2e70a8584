"""OpenAI request parameters as ``SamplingParams``: how one sequence picks its tokens and when it stops."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from servelm.agents import ChatCompletionRequest


@dataclass(frozen=True)
class GuidedDecoding:
    """A grammar the output must follow: ``kind`` is "json_schema" (``value`` the schema as JSON text),
    "json_object" (any JSON object), "regex" or "lark" (llguidance's Lark dialect, which can embed JSON
    schemas: tool calls use it)."""

    kind: str
    value: str = ""


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
    presence_penalty: float = 0.0  # subtracted from the logit of every token already generated
    frequency_penalty: float = 0.0  # subtracted once per time a token was generated
    repetition_penalty: float = 1.0  # divides positive (multiplies negative) logits of tokens in prompt or output
    min_p: float = 0.0  # after temperature: drop tokens less likely than min_p x the most likely one's probability
    logit_bias: Optional[dict[int, float]] = None  # added to the logits of these token ids
    logprobs: Optional[int] = None  # None: none; 0: the chosen token's; k: and the k most likely
    guided: Optional[GuidedDecoding] = None

    @property
    def needs_processing(self) -> bool:
        """Whether the logits change before sampling (penalties, bias, a grammar)."""
        return bool(
            self.presence_penalty
            or self.frequency_penalty
            or self.repetition_penalty != 1.0
            or self.logit_bias
            or self.guided
        )


#: temperatures below this sample greedily, as in vLLM (dividing logits by less overflows them)
GREEDY_BELOW = 1e-5
#: a top_k at least this large keeps every token of any vocabulary: it is off
ALL_TOKENS = 2**31

#: The output cap when neither the request nor the model sets one. OpenAI's habit (a fixed cap on output
#: tokens per model), not vLLM's (all that is left of the context): a client that forgets max_tokens
#: gets a bounded answer, not thousands of tokens of a looping small model.
DEFAULT_MAX_TOKENS = 512

#: model_config / generation_config keys that give a request's defaults
DEFAULT_KEYS = (
    "max_tokens",
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "stop",
    "ignore_eos",
)


def default_max_tokens(defaults: dict[str, Any]) -> int:
    """The model's own output cap: ``max_tokens`` or ``max_new_tokens`` from its model_config (or its
    checkpoint's generation_config), else DEFAULT_MAX_TOKENS."""
    for key in ("max_tokens", "max_new_tokens"):
        value = defaults.get(key)
        if value:
            return int(value)
    return DEFAULT_MAX_TOKENS


def sampling_params(
    request: ChatCompletionRequest, prompt_length: int, context_length: int, defaults: Optional[dict[str, Any]] = None
) -> SamplingParams:
    """SamplingParams for one request. What the request leaves out comes from ``defaults`` (the model's
    model_config over its generation_config: max_tokens / max_new_tokens, temperature, top_p, top_k, stop);
    with no cap anywhere, DEFAULT_MAX_TOKENS. The cap never exceeds what is left of the context."""
    defaults = defaults or {}
    room = max(1, context_length - prompt_length)
    limit = request.token_limit() or default_max_tokens(defaults)
    temperature = request.temperature if request.temperature is not None else defaults.get("temperature", 1.0)
    top_k = int(request.top_k if request.top_k is not None else defaults.get("top_k", 0))
    return SamplingParams(
        max_tokens=min(int(limit), room),
        temperature=float(temperature) if temperature >= GREEDY_BELOW else 0.0,
        top_p=float(request.top_p if request.top_p is not None else defaults.get("top_p", 1.0)),
        top_k=top_k if top_k < ALL_TOKENS else 0,
        min_p=float(request.min_p if request.min_p is not None else defaults.get("min_p", 0.0)),
        repetition_penalty=float(
            request.repetition_penalty
            if request.repetition_penalty is not None
            else defaults.get("repetition_penalty", 1.0)
        ),
        seed=request.seed,
        stop=list(request.stop or defaults.get("stop") or []),
        ignore_eos=bool(
            (request.model_extra or {}).get("ignore_eos", defaults.get("ignore_eos", False))
        ),  # vLLM's extension
    )


def generation_defaults(directory: Optional[str]) -> dict[str, Any]:
    """Request defaults from a checkpoint's ``generation_config.json`` (max_new_tokens, temperature, top_p,
    top_k), as vLLM reads them (``--generation-config auto``); {} when there is none."""
    import json
    import os

    file = os.path.join(directory, "generation_config.json") if directory else ""
    if not file or not os.path.isfile(file):
        return {}
    try:
        with open(file) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return {}
    keys = ("max_new_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty")
    return {k: config[k] for k in keys if config.get(k) is not None}
