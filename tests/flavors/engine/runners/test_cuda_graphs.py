"""Decode steps through the CUDA graphs' static buffers (``cuda_graphs.py``), run eagerly here (no GPU): padded to a
recorded size with rows that write a scratch block only, they give the logits of the runner's own decode step.
The attention is the GPU kernel under Triton's interpreter."""

import os
import sys

import pytest

torch = pytest.importorskip("torch")
INTERPRETED_FROM_THE_START = "triton" not in sys.modules or os.environ.get("TRITON_INTERPRET") == "1"
os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="Triton is not installed here (pip install triton)")

from servelm.flavors.engine.attention.triton_paged import paged_attention  # noqa: E402
from servelm.flavors.engine.model_runner import Chunk, StepBatch  # noqa: E402
from servelm.flavors.engine.runners.cuda_graphs import DecodeGraphs  # noqa: E402
from servelm.flavors.engine.runners.llama import LlamaWeights, TorchRunner  # noqa: E402


def test_a_padded_graph_step_gives_the_eager_steps_logits(tiny_llama, monkeypatch):
    from transformers import AutoModelForCausalLM

    if not INTERPRETED_FROM_THE_START:
        pytest.skip("Triton was imported before this module could ask for its interpreter")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    weights = LlamaWeights(model, torch.float32)
    size, rows = 16, 3
    tables = [[0, 1], [2, 3], [4, 5]]
    prompts = [list(range(3, 20)), list(range(30, 52)), list(range(60, 65))]

    def prefilled() -> TorchRunner:
        runner = TorchRunner(weights)
        runner.allocate(7, size, 4)  # six blocks for three rows, and block 6 as the scratch block
        runner.forward(StepBatch(chunks=[Chunk(i, p, 0, tables[i]) for i, p in enumerate(prompts)]))
        return runner

    step = StepBatch(
        decode_seqs=[0, 1, 2],
        decode_tokens=[7, 8, 9],
        decode_positions=[len(p) for p in prompts],
        decode_blocks=tables,
    )
    reference = prefilled()
    eager = reference.forward(step)  # the numba kernel's decode step
    runner = prefilled()
    runner.gpu_kernel = paged_attention(weights.head_dim, weights.heads // weights.kv_heads, size)
    graphs = DecodeGraphs(runner, max_rows=4, max_blocks=4, scratch=6, record=False)
    assert graphs.applies(step) and graphs.sizes == [1, 2, 4]
    got = graphs.run(step, size)  # three rows run as four: the fourth writes block 6 only
    assert got.shape == (rows, weights.vocab_size)
    torch.testing.assert_close(got, eager, atol=1e-4, rtol=1e-4)
    for pool, expected in zip(runner.keys + runner.values, reference.keys + reference.values):
        torch.testing.assert_close(pool[:6], expected[:6], atol=1e-6, rtol=1e-6)  # the sequences' blocks alike
    assert not graphs.applies(StepBatch(chunks=[Chunk(0, [1], 0, [0])]))  # prompt chunks run eagerly
