"""The torch runner: steps padded to bounded shapes compute what the unpadded step computes."""

import pytest

torch = pytest.importorskip("torch")

from servelm.flavors.engine.fixed_rows import FixedRows  # noqa: E402
from servelm.flavors.engine.runners import llama as runner_module  # noqa: E402
from servelm.flavors.engine.runners.llama import LlamaWeights, TorchRunner, padded_step_tokens  # noqa: E402


def test_step_token_counts_round_up_past_the_exact_range():
    exact, bucket = runner_module.EXACT_STEP_TOKENS, runner_module.STEP_BUCKET
    assert [padded_step_tokens(n) for n in (1, exact)] == [1, exact]
    assert padded_step_tokens(exact + 1) % bucket == 0
    assert all(n <= padded_step_tokens(n) < n + bucket for n in range(1, 700))
    assert len({padded_step_tokens(n) for n in range(1, 545)}) <= exact + 544 // bucket + 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_padded_step_matches_the_unpadded_one(tiny_llama, monkeypatch, dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    weights = LlamaWeights(model, getattr(torch, dtype))

    def step(exact: int):
        monkeypatch.setattr(runner_module, "EXACT_STEP_TOKENS", exact)
        runner = FixedRows(TorchRunner(weights), 3, 64)
        runner.forward([], [], [(0, list(range(3, 13)), 0), (1, list(range(20, 27)), 0)])
        # two decode rows and a 37-token chunk: 39 tokens, padded to the next bucket
        logits = runner.forward([5, 6], [10, 7], [(2, list(range(40, 77)), 0)])
        return logits.float(), runner.runner.keys[0].clone()

    padded_logits, padded_keys = step(runner_module.EXACT_STEP_TOKENS)
    exact_logits, exact_keys = step(10**6)
    assert padded_logits.shape == exact_logits.shape == (3, weights.vocab_size)
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    torch.testing.assert_close(padded_logits, exact_logits, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(padded_keys, exact_keys, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_chunks_behind_one_cached_prefix_go_last_and_their_logits_come_back_in_order(tiny_llama, dtype):
    """Chunks behind a shared cached prefix are attended together after the tokens the kernel takes (decode rows and
    the other chunks); the step computes what a runner attending every chunk alone computes, logits in batch order."""
    from transformers import AutoModelForCausalLM

    from servelm.flavors.engine.model_runner import Chunk, StepBatch

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    weights = LlamaWeights(model, getattr(torch, dtype))
    size, prefix = 8, list(range(3, 27))  # a 24-token prefix: blocks 0, 1, 2

    def step(shared_prefixes: bool):
        runner = TorchRunner(weights)
        runner.allocate(40, size, 8)
        runner.shared_prefixes = shared_prefixes and runner.shared_prefixes
        runner.forward(StepBatch(chunks=[Chunk(0, prefix, 0, [0, 1, 2])]))  # the prefix is cached
        runner.forward(StepBatch(chunks=[Chunk(1, list(range(30, 40)), 0, [5, 6])]))  # a row that will decode
        batch = StepBatch(
            decode_seqs=[1],
            decode_tokens=[41],
            decode_positions=[10],
            decode_blocks=[[5, 6]],
            chunks=[
                Chunk(2, [50, 51, 52, 53, 54], 24, [0, 1, 2, 10]),  # behind the prefix
                Chunk(3, list(range(60, 80)), 0, [12, 13, 14]),  # a prompt of its own, between them
                Chunk(4, list(range(80, 91)), 24, [0, 1, 2, 16, 17]),  # behind the prefix
            ],
        )
        return runner.forward(batch).float(), runner.keys[0].clone()

    together_logits, together_keys = step(True)
    alone_logits, alone_keys = step(False)
    assert together_logits.shape == (4, weights.vocab_size)
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    torch.testing.assert_close(together_logits, alone_logits, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(together_keys, alone_keys, atol=0, rtol=0)


def test_a_refused_shared_prefix_attention_falls_back_to_each_chunk_alone(tiny_llama, monkeypatch):
    """Where torch's flash attention refuses (it is a private op), the step attends each chunk alone and the runner
    stops grouping: same logits, no failed step."""
    from transformers import AutoModelForCausalLM

    from servelm.flavors.engine.model_runner import Chunk, StepBatch

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    weights = LlamaWeights(model, torch.float32)

    def refused(*args, **kwargs):
        raise RuntimeError("refused")

    def step(runner):
        runner.allocate(20, 8, 4)
        runner.forward(StepBatch(chunks=[Chunk(0, list(range(3, 27)), 0, [0, 1, 2])]))
        chunks = [Chunk(1, [50, 51, 52], 24, [0, 1, 2, 5]), Chunk(2, [60, 61], 24, [0, 1, 2, 6])]
        return runner.forward(StepBatch(chunks=chunks)).float()

    expected = step(TorchRunner(weights))
    monkeypatch.setattr(runner_module, "shared_prefix_attention", refused)
    runner = TorchRunner(weights)
    if not runner.shared_prefixes:
        pytest.skip("this torch has no CPU flash attention returning log-sum-exps")
    torch.testing.assert_close(step(runner), expected, atol=1e-5, rtol=1e-5)
    assert not runner.shared_prefixes


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_the_top_logits_are_the_fp32_projection_of_the_hidden_state(tiny_llama, quantization):
    from transformers import AutoModelForCausalLM

    from servelm.flavors.engine.runners.int8_linear import int8_unavailable_reason

    if quantization and int8_unavailable_reason(torch.device("cpu")):
        pytest.skip(int8_unavailable_reason(torch.device("cpu")))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    weights = LlamaWeights(model, torch.bfloat16, quantization)
    runner = TorchRunner(weights)
    hidden = torch.randn(3, weights.hidden, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    with torch.inference_mode():
        logits = runner.logits(hidden)
    assert logits.dtype == torch.float32 and logits.shape == (3, weights.vocab_size)
    exact = hidden.float() @ model.get_output_embeddings().weight.to(torch.bfloat16).float().T  # [3, vocab]
    top = logits.topk(runner_module.EXACT_TOP, dim=-1).indices
    torch.testing.assert_close(logits.gather(1, top), exact.gather(1, top), atol=1e-4, rtol=1e-5)
    assert (logits.argmax(-1) == exact.argmax(-1)).all()  # no tie left to the rounding of the bf16 logits


@pytest.mark.parametrize(("rows", "count", "k"), [(16, 49152, 8), (3, 1000, 8), (2, 100, 8), (1, 7, 7)])
def test_top_indices_are_torch_topk(rows, count, k):
    scores = torch.randn(rows, count, generator=torch.Generator().manual_seed(count))
    found = runner_module.top_indices(torch, scores, k)
    assert torch.equal(found.sort(-1).values, scores.topk(k, dim=-1).indices.sort(-1).values)


def test_the_probe_step_leaves_no_cache_and_changes_no_later_step(tiny_llama):
    """The largest step run once before the KV cache exists (what a GPU's budget is measured over) drops its pools
    and leaves the runner computing what a fresh one does."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    weights = LlamaWeights(model, torch.float32)
    probed = TorchRunner(weights)
    made = []
    probed.probe_step(70, 5, lambda: made.append(len(probed.keys[0])))
    assert made == [-(-71 // 32) + 5] and not probed.keys and not probed.buffers and probed.block_size == 0

    def answers(runner):
        rows = FixedRows(runner, 2, 64)
        first = rows.forward([], [], [(0, list(range(3, 13)), 0), (1, list(range(20, 27)), 0)])
        return first, rows.forward([5, 6], [10, 7], [])

    for got, expected in zip(answers(probed), answers(TorchRunner(weights))):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
