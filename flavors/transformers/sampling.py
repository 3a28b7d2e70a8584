"""Per-request sampling over a batch of logits: greedy, temperature, top-k, top-p and seeds.

Every tensor it makes lives on the logits' device, so the same code samples on CPU and GPU; a seeded
row draws from its own generator (made on that device), the others in one vectorized draw.
"""

from __future__ import annotations

from typing import Any

from ..generation import SamplingParams

__all__ = ["SamplingParams", "sample_next"]


def sample_next(logits: Any, params: list[SamplingParams], generators: list[Any]) -> list[int]:
    """Next token id per row of ``logits`` [batch, vocab], each row with its own parameters.

    Greedy rows take the argmax; the others are sampled after temperature, top-k and top-p, with the
    row's seeded ``torch.Generator`` when it has one.
    """
    import torch

    device = logits.device
    choice = logits.argmax(dim=-1)  # [batch]
    sampled = [i for i, p in enumerate(params) if p.temperature > 0]
    if not sampled:
        return choice.tolist()
    rows = torch.tensor(sampled, device=device)
    temperatures = torch.tensor([params[i].temperature for i in sampled], device=device, dtype=torch.float32)
    scores = logits[rows].float() / temperatures.unsqueeze(1)  # [n, vocab]
    top_k = [params[i].top_k for i in sampled]
    top_p = [params[i].top_p for i in sampled]
    if any(k > 0 for k in top_k) or any(p < 1.0 for p in top_p):
        ordered, order = scores.sort(dim=-1, descending=True)  # [n, vocab]
        ranks = torch.arange(ordered.shape[-1], device=device).unsqueeze(0)
        ks = torch.tensor([k if k > 0 else ordered.shape[-1] for k in top_k], device=device).unsqueeze(1)
        drop = ranks >= ks
        probs = ordered.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass strictly before each token
        drop |= before >= torch.tensor(top_p, device=device).unsqueeze(1)
        ordered = ordered.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(1, order, ordered)
    probs = scores.softmax(dim=-1)
    picks = [0] * len(sampled)
    free = [j for j, i in enumerate(sampled) if generators[i] is None]
    if free:
        drawn = torch.multinomial(probs[free], 1).squeeze(1).tolist()
        for j, token in zip(free, drawn):
            picks[j] = token
    for j, i in enumerate(sampled):
        if generators[i] is not None:
            picks[j] = int(torch.multinomial(probs[j], 1, generator=generators[i]).item())
    out = choice.tolist()
    for j, i in enumerate(sampled):
        out[i] = picks[j]
    return out
