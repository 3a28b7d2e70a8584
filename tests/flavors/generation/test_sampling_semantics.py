"""One sampling semantics for every engine, vLLM's: penalties and logit bias on the logits, then temperature,
then top-k, then top-p over the distribution renormalised to those k tokens; a seed makes the draws repeat.

Each case runs both samplers (torch: the transformers engine; numpy: the onnx engine) many times with fixed
seeds and compares the frequency of each token with the probability a reference written from vLLM's
definitions gives it, within four standard errors."""

import math

import numpy as np
import pytest

from servelm.flavors.generation import SamplingParams
from servelm.flavors.generation.choice import RowSampling
from servelm.flavors.generation.numpy_sampling import numpy_generator, sample_numpy

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
]


def reference(params, history):
    """The probability of each token under vLLM's definitions."""
    logits = np.log(np.asarray(PROBS, dtype=np.float64))
    if history:
        ids, counts = np.unique(history, return_counts=True)
        logits[ids] -= params.presence_penalty + params.frequency_penalty * counts
    for token, bias in (params.logit_bias or {}).items():
        logits[token] += bias
    logits = logits / params.temperature
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


def frequencies(sampler, params, history):
    counts = np.zeros(len(PROBS))
    for token in sampler(params, history):
        counts[token] += 1
    return counts / DRAWS


def numpy_draws(params, history):
    logits = np.log(np.asarray([PROBS], dtype=np.float32))
    row = RowSampling(params, numpy_generator(7), history)
    return [sample_numpy(logits, [row])[0].token for _ in range(DRAWS)]


def torch_draws(params, history):
    torch = pytest.importorskip("torch")
    from servelm.flavors.transformers.sampling import sample_next

    logits = torch.log(torch.tensor([PROBS] * DRAWS))  # one row per draw: the batched path (unseeded rows together)
    torch.manual_seed(7)
    return [c.token for c in sample_next(logits, [RowSampling(params, None, history)] * DRAWS)]


@pytest.mark.parametrize("sampler", [numpy_draws, torch_draws], ids=["numpy", "torch"])
@pytest.mark.parametrize("name, params, history", CASES, ids=[c[0] for c in CASES])
def test_each_sampler_draws_vllms_distribution(sampler, name, params, history):
    expected = reference(params, history)
    seen = frequencies(sampler, params, history)
    for token, (p, f) in enumerate(zip(expected, seen)):
        tolerance = 4 * math.sqrt(max(p * (1 - p), 1e-4) / DRAWS) + 1e-3
        assert abs(f - p) <= tolerance, f"{name}: token {token} drawn {f:.3f}, expected {p:.3f}"


def test_the_issue_case_never_draws_what_top_p_drops_after_top_k():
    """top_k=2, top_p=0.6 over [0.5, 0.2, 0.2, 0.1]: top-k keeps [0.714, 0.286]; top-p then keeps token 0 only."""
    params = SamplingParams(temperature=1.0, top_k=2, top_p=0.6)
    assert list(reference(params, None)) == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("sampler", ["numpy", "torch"])
def test_a_seed_repeats_the_draws(sampler):
    params = SamplingParams(temperature=1.0, seed=11)
    if sampler == "numpy":
        logits = np.log(np.asarray([PROBS], dtype=np.float32))
        runs = []
        for _ in range(2):
            row = RowSampling(params, numpy_generator(11))
            runs.append([sample_numpy(logits, [row])[0].token for _ in range(50)])
    else:
        torch = pytest.importorskip("torch")
        from servelm.flavors.transformers.sampling import sample_next

        logits = torch.log(torch.tensor([PROBS]))
        runs = []
        for _ in range(2):
            row = RowSampling(params, torch.Generator().manual_seed(11))
            runs.append([sample_next(logits, [row])[0].token for _ in range(50)])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1
