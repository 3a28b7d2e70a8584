"""``GenerationClock``: when one request's sequences were submitted to the engine, given a batch row, produced
their first token and ended. It feeds the model's vLLM-named metrics (TTFT, time per output token, queue,
prefill and decode times, tokens, finish reasons) and the trace's queue / prefill / decode spans."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Optional

from .. import tracing
from ..metrics import ModelMetrics


class GenerationClock:
    """The times of one generation's choices (wall-clock seconds: the engines stamp scheduling times so)."""

    __slots__ = ("metrics", "parent", "submitted", "first", "last")

    def __init__(self, metrics: Optional[ModelMetrics], choices: int):
        self.metrics = metrics
        self.parent = tracing.current_context()  # the span the phases belong to (the request's or the LLM call's)
        self.submitted = time.time()
        self.first: list[Optional[float]] = [None] * choices
        self.last: list[float] = [0.0] * choices

    def produced(self, choice: int) -> None:
        """A Delta of ``choice`` arrived (its first: the end of its prefill)."""
        now = time.time()
        if self.first[choice] is None:
            self.first[choice] = now
        elif self.metrics is not None:
            self.metrics.itl.observe(now - self.last[choice])
        self.last[choice] = now

    def finished(self, streams: Sequence[Any], prompt_tokens: int, ends: Sequence[tuple[Optional[str], int]]) -> None:
        """Every choice ended: ``ends`` holds each one's (finish reason, generated tokens); a reason of None
        means it did not finish (its reader went away: counted as ``abort``)."""
        ended = time.time()
        metrics = self.metrics
        if metrics is not None:
            metrics.prompt_tokens.inc(prompt_tokens)
            metrics.request_prompt_tokens.observe(prompt_tokens)
            metrics.e2e.observe(ended - self.submitted)
        for i, (stream, (reason, tokens)) in enumerate(zip(streams, ends)):
            scheduled = getattr(stream, "scheduled_at", None)
            first = self.first[i]
            if metrics is not None:
                metrics.generation_tokens.inc(tokens)
                metrics.request_generation_tokens.observe(tokens)
                metrics.finished(reason or "abort")
                if first is not None:
                    metrics.ttft.observe(first - self.submitted)
                    metrics.decode.observe(ended - first)
                    if tokens > 1:
                        metrics.tpot.observe((ended - first) / (tokens - 1))
                if scheduled is not None and scheduled >= self.submitted:
                    metrics.queue.observe(scheduled - self.submitted)
                    metrics.prefill.observe(max(0.0, (first or ended) - scheduled))
            tracing.phase_spans(self.parent, self.submitted, scheduled, first, ended, i)
        if self.parent is not None:
            first_token = self.first[0]
            tracing.generation_attributes(
                self.parent,
                first_token - self.submitted if first_token is not None else None,
                [reason or "abort" for reason, _ in ends],
            )
