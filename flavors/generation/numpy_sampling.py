"""Per-request sampling over a batch of logits in numpy (for runners without torch): greedy,
temperature, top-k, top-p and seeds, with the same semantics as the torch sampler."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .sampling import SamplingParams

_unseeded = np.random.default_rng()


def numpy_generator(seed: int) -> np.random.Generator:
    """A seeded generator for one sequence."""
    return np.random.default_rng(seed)


def sample_numpy(logits: Any, params: list[SamplingParams], generators: list[Optional[np.random.Generator]]) -> list[int]:
    """Next token id per row of ``logits`` [batch, vocab], each row with its own parameters."""
    out = []
    for row, p, rng in zip(logits, params, generators):
        if p.temperature <= 0:
            out.append(int(row.argmax()))
            continue
        scores = row.astype(np.float64) / p.temperature
        if p.top_k > 0 or p.top_p < 1.0:
            order = np.argsort(-scores, kind="stable")
            ordered = scores[order]
            keep = len(ordered) if p.top_k <= 0 else min(p.top_k, len(ordered))
            probs = np.exp(ordered[:keep] - ordered[0])
            probs /= probs.sum()
            before = np.cumsum(probs) - probs  # mass strictly before each token
            keep = max(1, int((before < p.top_p).sum()))
            candidates, weights = order[:keep], probs[:keep] / probs[:keep].sum()
        else:
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
            candidates = np.arange(len(scores))
        out.append(int(candidates[(rng or _unseeded).choice(len(candidates), p=weights)]))
    return out
