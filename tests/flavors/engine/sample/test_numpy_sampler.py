"""The numpy sampler (runners without torch) follows the same rules as the torch one."""

import math

import numpy as np

from servelm.flavors.engine import SamplingParams
from servelm.flavors.engine.sample.choice import RowSampling
from servelm.flavors.engine.sample.numpy_sampler import numpy_generator, sample_numpy


def tokens(logits, rows):
    return [c.token for c in sample_numpy(np.asarray(logits, dtype=np.float32), rows)]


def test_greedy_top_k_top_p_and_seeds():
    logits = [[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]]
    assert tokens(logits, [RowSampling(SamplingParams(temperature=0))] * 2) == [1, 0]
    assert tokens(logits, [RowSampling(SamplingParams(temperature=1.0, top_k=1))] * 2) == [1, 0]
    draws = [
        tokens([[1.0, 1.0, 1.0, 1.0]], [RowSampling(SamplingParams(temperature=1.0, seed=3), numpy_generator(3))])
        for _ in range(4)
    ]
    assert all(d == draws[0] for d in draws)
    assert tokens([[0.0, 0.1, 9.0]], [RowSampling(SamplingParams(temperature=1.0, top_p=0.5))]) == [2]


def test_penalties_bias_masks_and_logprobs():
    logits = [[0.0, 5.0, 4.5]]
    assert tokens(logits, [RowSampling(SamplingParams(temperature=0, presence_penalty=1.0), history=[1])]) == [2]
    assert tokens(logits, [RowSampling(SamplingParams(temperature=0, logit_bias={0: 10.0}))]) == [0]
    assert tokens(
        logits, [RowSampling(SamplingParams(temperature=0, guided=object()), allowed=np.array([True, False, True]))]
    ) == [2]
    [choice] = sample_numpy(np.asarray(logits, np.float32), [RowSampling(SamplingParams(temperature=0, logprobs=1))])
    expected = np.asarray(logits[0]) - np.log(np.exp(logits[0]).sum())
    assert choice.token == 1 and math.isclose(choice.logprob, expected[1], rel_tol=1e-6) and choice.top[0][0] == 1
