"""One sampling semantics for every engine, vLLM's: logit bias, then the repetition penalty (prompt and output
tokens), then the presence and frequency penalties (output tokens) on the logits; then temperature, min-p,
top-k, and top-p over the distribution renormalised to what is left; a seed makes the draws repeat.

Each case runs both samplers (torch: the transformers engine; numpy: the onnx engine) many times with fixed
seeds and compares the frequency of each token with the probability a reference written from vLLM's
definitions gives it, within four standard errors."""

import sys
from pathlib import Path

import numpy as np
import pytest

from servelm.flavors.engine import SamplingParams
from servelm.flavors.engine.sample.choice import RowSampling
from servelm.flavors.engine.sample.numpy_sampler import numpy_generator, sample_numpy

sys.path.insert(0, str(Path(__file__).parent))
import sampling_reference  # noqa: E402
from sampling_reference import CASES, DRAWS, PROBS, PROMPT, assert_drawn_as_expected, reference  # noqa: E402

sys.path.pop(0)


def frequencies(sampler, params, history):
    counts = np.zeros(len(PROBS))
    for token in sampler(params, history):
        counts[token] += 1
    return counts / DRAWS


def numpy_draws(params, history):
    logits = np.log(np.asarray([PROBS], dtype=np.float32)) + 1.0
    row = RowSampling(params, numpy_generator(7), history, prompt=PROMPT)
    return [sample_numpy(logits, [row])[0].token for _ in range(DRAWS)]


def torch_draws(params, history):
    torch = pytest.importorskip("torch")
    from servelm.flavors.engine.sample.torch_sampler import sample_next

    logits = torch.log(torch.tensor([PROBS] * DRAWS)) + 1.0  # a row per draw: the batched path (unseeded rows)
    torch.manual_seed(7)
    return [c.token for c in sample_next(logits, [RowSampling(params, None, history, prompt=PROMPT)] * DRAWS)]


@pytest.mark.parametrize("sampler", [numpy_draws, torch_draws], ids=["numpy", "torch"])
@pytest.mark.parametrize("name, params, history", CASES, ids=[c[0] for c in CASES])
def test_each_sampler_draws_vllms_distribution(sampler, name, params, history):
    expected, seen = reference(params, history), frequencies(sampler, params, history)
    sampling_reference.record(sampler.__name__.split("_")[0], name, expected, seen)
    assert_drawn_as_expected(name, expected, seen, DRAWS)


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
        from servelm.flavors.engine.sample.torch_sampler import sample_next

        logits = torch.log(torch.tensor([PROBS]))
        runs = []
        for _ in range(2):
            row = RowSampling(params, torch.Generator().manual_seed(11))
            runs.append([sample_next(logits, [row])[0].token for _ in range(50)])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1


def teardown_module() -> None:
    """The table of every case and sampler (``pytest -s`` shows it)."""
    print("\n" + sampling_reference.table())
