"""The sampling table every engine's sampler is held to: cases over four tokens and vLLM's definitions of what
each token's probability then is. Shared by tests/flavors/engine/sample/test_sampling_semantics.py (the torch and
numpy samplers) and tests/serving/engines/test_vllm.py (vLLM's own sampler, through the vLLM engine)."""

import math

import numpy as np

from servelm.flavors.engine import SamplingParams

PROBS = [0.5, 0.2, 0.2, 0.1]
DRAWS = 4000

CASES = [  # (name, params, history)
    ("plain", SamplingParams(temperature=1.0), None),
    ("temperature 0.5", SamplingParams(temperature=0.5), None),
    ("temperature 2", SamplingParams(temperature=2.0), None),
    ("top_k 2", SamplingParams(temperature=1.0, top_k=2), None),
    ("top_p 0.6", SamplingParams(temperature=1.0, top_p=0.6), None),
    ("top_p 0.75", SamplingParams(temperature=1.0, top_p=0.75), None),
    ("top_p 5e-324 (0 in fp32): the top token alone", SamplingParams(temperature=1.0, top_p=5e-324), None),
    ("top_k 2 then top_p 0.6 (renormalised)", SamplingParams(temperature=1.0, top_k=2, top_p=0.6), None),
    ("top_k 3 then top_p 0.8", SamplingParams(temperature=1.0, top_k=3, top_p=0.8), None),
    ("temperature 0.7, top_k 3, top_p 0.9", SamplingParams(temperature=0.7, top_k=3, top_p=0.9), None),
    ("logit_bias", SamplingParams(temperature=1.0, logit_bias={3: 2.0}), None),
    ("presence_penalty", SamplingParams(temperature=1.0, presence_penalty=1.0), [0]),
    ("frequency_penalty", SamplingParams(temperature=1.0, frequency_penalty=0.5), [0, 0, 1]),
    ("min_p 0.3", SamplingParams(temperature=1.0, min_p=0.3), None),
    ("min_p 0.5 after temperature 2", SamplingParams(temperature=2.0, min_p=0.5), None),
    ("min_p 0.3 then top_p 0.8", SamplingParams(temperature=1.0, min_p=0.3, top_p=0.8), None),
    ("repetition_penalty 2 (prompt and output)", SamplingParams(temperature=1.0, repetition_penalty=2.0), [0]),
    ("repetition_penalty 0.5 rewards", SamplingParams(temperature=1.0, repetition_penalty=0.5), [3]),
    (
        "bias, repetition, presence together",
        SamplingParams(temperature=1.0, logit_bias={2: 3.0}, repetition_penalty=1.5, presence_penalty=0.5),
        [2, 1],
    ),
]
PROMPT = [1]  # the prompt's tokens: the repetition penalty counts them with the output's


def reference(params, history, offset=1.0, prompt=None, probs=None):
    """The probability of each token under vLLM's definitions, the logits being log(``probs``, PROBS by default)
    + ``offset`` (some positive, some negative with the default: the repetition penalty treats the two
    differently)."""
    prompt = PROMPT if prompt is None else prompt
    logits = np.log(np.asarray(PROBS if probs is None else probs, dtype=np.float64)) + offset
    for token, bias in (params.logit_bias or {}).items():
        logits[token] += bias
    if params.repetition_penalty != 1.0:
        for token in set(prompt + (history or [])):
            rp = params.repetition_penalty
            logits[token] = logits[token] / rp if logits[token] > 0 else logits[token] * rp
    if history:
        ids, counts = np.unique(history, return_counts=True)
        logits[ids] -= params.presence_penalty + params.frequency_penalty * counts
    logits = logits / params.temperature
    if params.min_p > 0:
        probs = np.exp(logits - logits.max())
        logits = np.where(probs >= params.min_p * probs.max(), logits, -np.inf)
    order = np.argsort(-logits, kind="stable")
    keep = np.zeros(len(logits), dtype=bool)
    k = params.top_k if params.top_k > 0 else len(logits)
    keep[order[:k]] = True
    probs = np.where(keep, np.exp(logits - logits.max()), 0.0)
    probs /= probs.sum()
    mass = 0.0
    for token in order:  # top-p over the renormalised top-k: a token stays while the mass before it is < top_p
        if keep[token] and mass >= params.top_p:
            keep[token] = False
        mass += probs[token]
    probs = np.where(keep, probs, 0.0)
    return probs / probs.sum()


def assert_drawn_as_expected(name, expected, seen, draws, slack=1e-3):
    """Each token's frequency within four standard errors (plus ``slack``) of its expected probability."""
    for token, (p, f) in enumerate(zip(expected, seen)):
        tolerance = 4 * math.sqrt(max(p * (1 - p), 1e-4) / draws) + slack
        assert abs(f - p) <= tolerance, f"{name}: token {token} drawn {f:.3f}, expected {p:.3f}"


#: (sampler, case, expected, drawn) of every comparison made in this process, for ``table()``
ROWS: list[tuple[str, str, list[float], list[float]]] = []


def record(sampler, name, expected, seen):
    ROWS.append((sampler, name, [float(p) for p in expected], [float(f) for f in seen]))


def table() -> str:
    """The comparisons made so far as a markdown table: each token's expected probability and drawn frequency."""
    lines = ["| sampler | case | expected | drawn |", "|---|---|---|---|"]
    for sampler, name, expected, seen in ROWS:
        lines.append(
            f"| {sampler} | {name} | {' '.join(f'{p:.3f}' for p in expected)} | {' '.join(f'{f:.3f}' for f in seen)} |"
        )
    return "\n".join(lines)
