"""Per-request sampling over a batch of logits: greedy, top-k, top-p, seeds, penalties, logit bias,
grammar masks and log-probabilities."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from servelm.flavors.engine.sample.choice import RowSampling  # noqa: E402
from servelm.flavors.engine.sample.torch_sampler import SamplingParams, sample_next  # noqa: E402


def tokens(logits, rows):
    return [c.token for c in sample_next(logits, rows)]


def test_sampling_rules():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    assert tokens(logits, [RowSampling(SamplingParams(temperature=0))] * 2) == [1, 0]
    assert tokens(logits, [RowSampling(SamplingParams(temperature=1.0, top_k=1))] * 2) == [1, 0]
    seeded = [
        tokens(logits, [RowSampling(SamplingParams(temperature=2.0, seed=7), torch.Generator().manual_seed(7))] * 2)
        for _ in range(3)
    ]
    assert seeded[0] == seeded[1] == seeded[2]
    assert tokens(torch.tensor([[0.0, 0.1, 9.0]]), [RowSampling(SamplingParams(temperature=1.0, top_p=0.5))]) == [2]


def test_penalties_bias_and_masks_change_the_choice_of_their_row_only():
    logits = torch.tensor([[0.0, 5.0, 4.5], [0.0, 5.0, 4.5]])
    greedy = SamplingParams(temperature=0)
    assert tokens(
        logits, [RowSampling(SamplingParams(temperature=0, presence_penalty=1.0), history=[1]), RowSampling(greedy)]
    ) == [2, 1]
    assert tokens(
        logits, [RowSampling(SamplingParams(temperature=0, frequency_penalty=0.3), history=[1, 1]), RowSampling(greedy)]
    ) == [2, 1]
    assert tokens(logits, [RowSampling(SamplingParams(temperature=0, logit_bias={0: 10.0})), RowSampling(greedy)]) == [
        0,
        1,
    ]
    allowed = np.array([True, False, True])
    guided = SamplingParams(temperature=0, guided=object())  # any grammar marks the row as processed
    assert tokens(logits, [RowSampling(guided, allowed=allowed), RowSampling(greedy)]) == [2, 1]


def test_logprobs_are_the_models_own_with_the_top_alternatives():
    logits = torch.tensor([[0.0, 2.0, 1.0]])
    [choice] = sample_next(logits, [RowSampling(SamplingParams(temperature=0, logprobs=2))])
    expected = torch.log_softmax(logits[0], dim=-1)
    assert choice.token == 1 and math.isclose(choice.logprob, float(expected[1]), rel_tol=1e-5)
    assert [t for t, _ in choice.top] == [1, 2] and math.isclose(choice.top[1][1], float(expected[2]), rel_tol=1e-5)
    [plain] = sample_next(logits, [RowSampling(SamplingParams(temperature=0))])
    assert plain.logprob is None and plain.top is None
