"""Per-request sampling over a batch of logits in numpy (for runners without torch), with the same
semantics as the torch sampler (vLLM's): logit bias, repetition / presence / frequency penalties and grammar
masks, then greedy, temperature, min-p, top-k, top-p over the top-k renormalised, and seeds; log-probabilities
when a row asks for them."""

from __future__ import annotations

from typing import Any

import numpy as np

from .choice import RowSampling, TokenChoice

_unseeded = np.random.default_rng()


def numpy_generator(seed: int) -> np.random.Generator:
    """A seeded generator for one sequence."""
    return np.random.default_rng(seed % 2**64)  # a negative seed (OpenAI allows int64) as its 64-bit pattern


def sample_numpy(logits: Any, rows: list[RowSampling]) -> list[TokenChoice]:
    """The next token of each row of ``logits`` [batch, vocab], each row with its own parameters."""
    out = []
    for raw, row in zip(logits, rows):
        scores = _processed(raw, row)
        choice = TokenChoice(_draw(scores, row))
        if row.params.logprobs is not None:
            shifted = raw.astype(np.float64) - raw.max()
            logprobs = shifted - np.log(np.exp(shifted).sum())
            choice.logprob = float(logprobs[choice.token])
            k = row.params.logprobs
            top: Any = np.argsort(-logprobs, kind="stable")[:k] if k else []
            choice.top = [(int(t), float(logprobs[t])) for t in top]
        out.append(choice)
    return out


def _processed(raw: np.ndarray, row: RowSampling) -> np.ndarray:
    """vLLM's order: logit bias, then the repetition penalty (prompt and output tokens), then the presence and
    frequency penalties (output tokens), then the grammar's mask."""
    p = row.params
    if not p.needs_processing:
        return raw
    scores = raw.astype(np.float64)
    if p.logit_bias:
        scores[list(p.logit_bias)] += list(p.logit_bias.values())
    if p.repetition_penalty != 1.0:
        seen = np.unique(np.asarray(row.seen(), dtype=np.int64))
        if len(seen):
            picked = scores[seen]
            scores[seen] = np.where(picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and row.history:
        ids, counts = np.unique(np.asarray(row.history), return_counts=True)
        scores[ids] -= p.presence_penalty + p.frequency_penalty * counts
    if row.allowed is not None and row.allowed.any():
        scores = np.where(row.allowed, scores, -np.inf)
    return scores


def _draw(scores: np.ndarray, row: RowSampling) -> int:
    p = row.params
    if p.temperature <= 0:
        return int(scores.argmax())
    scores = scores.astype(np.float64) / p.temperature
    if p.min_p > 0:  # on the temperature-scaled distribution, before top-k / top-p (vLLM's order)
        probs = np.exp(scores - scores.max())
        scores = np.where(probs >= p.min_p * probs.max(), scores, -np.inf)
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
    return int(candidates[(row.generator or _unseeded).choice(len(candidates), p=weights)])
