"""Per-request sampling over a batch of logits in torch: logit bias, repetition / presence / frequency
penalties and grammar masks, then greedy, temperature, min-p, top-k, top-p (over the top-k renormalised, as
vLLM) and seeds; log-probabilities when a row asks for them. ``numpy_sampler.py`` is the same for runners
without torch; one table of cases holds both, and vLLM's sampler, to these semantics
(tests/flavors/engine/sample/sampling_reference.py).

Every tensor it makes lives on the logits' device, so the same code samples on CPU and GPU; a seeded
row draws from its own generator (made on that device), the others in one vectorized draw.
"""

from __future__ import annotations

from typing import Any

from .. import SamplingParams
from .choice import RowSampling, TokenChoice

__all__ = ["SamplingParams", "sample_next"]


def sample_next(logits: Any, rows: list[RowSampling]) -> list[TokenChoice]:
    """The next token of each row of ``logits`` [batch, vocab], each row with its own parameters."""
    import torch

    scores = _processed(torch, logits, rows)
    tokens = _draw(torch, scores, rows)
    choices = [TokenChoice(token) for token in tokens]
    wanted = [i for i, row in enumerate(rows) if row.params.logprobs is not None]
    if wanted:
        index = torch.tensor(wanted, device=logits.device)
        logprobs = logits.index_select(0, index).float().log_softmax(dim=-1)  # [wanted, vocab]
        most = max(rows[i].params.logprobs or 0 for i in wanted)
        top_values, top_ids = logprobs.topk(max(most, 1), dim=-1)
        chosen = (
            logprobs.gather(1, torch.tensor([[tokens[i]] for i in wanted], device=logits.device)).squeeze(1).tolist()
        )
        for j, i in enumerate(wanted):
            k = rows[i].params.logprobs or 0
            choices[i].logprob = chosen[j]
            choices[i].top = list(zip(top_ids[j, :k].tolist(), top_values[j, :k].tolist())) if k else []
    return choices


def _processed(torch: Any, logits: Any, rows: list[RowSampling]) -> Any:
    """The logits after each row's penalties, bias and grammar mask (the input itself when no row has any)."""
    if not any(row.params.needs_processing for row in rows):
        return logits
    scores = logits.float().clone()  # [batch, vocab]
    device = logits.device
    for i, row in enumerate(rows):  # vLLM's order: bias, repetition penalty, presence / frequency penalties
        p = row.params
        if p.logit_bias:
            ids = torch.tensor(list(p.logit_bias), device=device)
            scores[i, ids] += torch.tensor(list(p.logit_bias.values()), device=device, dtype=scores.dtype)
        if p.repetition_penalty != 1.0 and (seen := row.seen()):
            ids = torch.tensor(seen, device=device).unique()
            picked = scores[i, ids]
            scores[i, ids] = torch.where(picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and row.history:
            ids, counts = torch.tensor(row.history, device=device).unique(return_counts=True)
            scores[i, ids] -= p.presence_penalty + p.frequency_penalty * counts.float()
        if row.allowed is not None and row.allowed.any():
            scores[i].masked_fill_(~torch.from_numpy(row.allowed).to(device), float("-inf"))
    return scores


def _draw(torch: Any, logits: Any, rows: list[RowSampling]) -> list[int]:
    """Greedy rows take the argmax; the others are sampled after temperature, top-k and top-p."""
    device = logits.device
    params = [row.params for row in rows]
    choice = logits.float().argmax(dim=-1)  # [batch]: in fp32 (exact for bf16, whose CPU argmax is much slower)
    sampled = [i for i, p in enumerate(params) if p.temperature > 0]
    if not sampled:
        return choice.tolist()
    index = torch.tensor(sampled, device=device)
    temperatures = torch.tensor([params[i].temperature for i in sampled], device=device, dtype=torch.float32)
    scores = logits.index_select(0, index).float() / temperatures.unsqueeze(1)  # [n, vocab]
    min_p = [params[i].min_p for i in sampled]
    if any(m > 0 for m in min_p):  # on the temperature-scaled distribution, before top-k / top-p (vLLM's order)
        probs = scores.softmax(dim=-1)
        floor = torch.tensor(min_p, device=device).unsqueeze(1) * probs.amax(dim=-1, keepdim=True)
        scores = scores.masked_fill(probs < floor, float("-inf"))
    top_k = [params[i].top_k for i in sampled]
    top_p = [params[i].top_p for i in sampled]
    if any(k > 0 for k in top_k) or any(p < 1.0 for p in top_p):
        # vLLM's order: top-k first, then top-p over the distribution renormalised to those k tokens
        ordered, order = scores.sort(dim=-1, descending=True)  # [n, vocab]
        ranks = torch.arange(ordered.shape[-1], device=device).unsqueeze(0)
        ks = torch.tensor([k if k > 0 else ordered.shape[-1] for k in top_k], device=device).unsqueeze(1)
        ordered = ordered.masked_fill(ranks >= ks, float("-inf"))
        probs = ordered.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass strictly before each token
        drop = before >= torch.tensor(top_p, device=device).unsqueeze(1)
        drop[:, 0] = False  # the most likely token always stays (a top_p that rounds to 0 in fp32 keeps it alone)
        ordered = ordered.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(1, order, ordered)
    probs = scores.softmax(dim=-1)
    picks = [0] * len(sampled)
    free = [j for j, i in enumerate(sampled) if rows[i].generator is None]
    if free:
        drawn = torch.multinomial(probs[free], 1).squeeze(1).tolist()
        for j, token in zip(free, drawn):
            picks[j] = token
    for j, i in enumerate(sampled):
        if rows[i].generator is not None:
            picks[j] = int(torch.multinomial(probs[j], 1, generator=rows[i].generator).item())
    out = choice.tolist()
    for j, i in enumerate(sampled):
        out[i] = picks[j]
    return out
