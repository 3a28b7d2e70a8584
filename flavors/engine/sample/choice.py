"""What a runner's sampler takes per row and gives back: the row's parameters and state in, the chosen
token (with its log-probability and the likeliest alternatives, when asked for) out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .params import SamplingParams


@dataclass
class RowSampling:
    """One row of a sampling call: its parameters, seeded generator, the tokens it generated so far
    (for presence / frequency penalties), its prompt (with ``history``, the tokens a repetition penalty
    counts) and, under a grammar, the mask of allowed tokens."""

    params: SamplingParams
    generator: Any = None
    history: Optional[list[int]] = None
    allowed: Any = None  # numpy bool [vocab], True where the grammar allows the token
    prompt: Optional[list[int]] = None

    def seen(self) -> list[int]:
        """The tokens a repetition penalty applies to: the prompt's and the generated ones."""
        return [*(self.prompt or ()), *(self.history or ())]


@dataclass
class TokenChoice:
    """A sampled token; ``logprob`` and ``top`` ([(token, logprob)], most likely first) when asked for.
    Log-probabilities are the model's own (before temperature, penalties and grammar masks)."""

    token: int
    logprob: Optional[float] = None
    top: Optional[list[tuple[int, float]]] = None
