"""Per-request sampling over a batch of logits: greedy, top-k, top-p and seeds."""

import pytest

torch = pytest.importorskip("torch")

from servelm.flavors.transformers.sampling import SamplingParams, sample_next  # noqa: E402


def test_sampling_rules():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    assert sample_next(logits, [SamplingParams(temperature=0)] * 2, [None, None]) == [1, 0]
    assert sample_next(logits, [SamplingParams(temperature=1.0, top_k=1)] * 2, [None, None]) == [1, 0]
    draws = [sample_next(logits, [SamplingParams(temperature=2.0, seed=7)] * 2, [torch.Generator().manual_seed(7)] * 2) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    assert sample_next(torch.tensor([[0.0, 0.1, 9.0]]), [SamplingParams(temperature=1.0, top_p=0.5)], [None]) == [2]
