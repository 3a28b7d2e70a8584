"""The own engine on a CUDA device (scripts/test-gpu.sh runs these where there is one; elsewhere they skip): the
Triton kernel against the torch reference on the device, decode steps replayed from CUDA graphs against eager ones,
the weights held once, and the scheduler's greedy answers on the GPU equal to the CPU's."""

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device here", allow_module_level=True)
pytest.importorskip("triton")

from servelm.flavors.engine.attention import paged_torch  # noqa: E402
from servelm.flavors.engine.attention.triton_paged import paged_attention  # noqa: E402
from servelm.flavors.engine.fixed_rows import FixedRows  # noqa: E402
from servelm.flavors.engine.hf_batcher import ContinuousBatcher, model_runner_factory  # noqa: E402
from servelm.flavors.engine.runners.llama import LlamaWeights, TorchRunner  # noqa: E402
from servelm.flavors.engine.sample.params import SamplingParams  # noqa: E402


def test_the_triton_kernel_computes_what_the_torch_reference_does_on_the_gpu():
    generator = torch.Generator(device="cuda").manual_seed(0)
    kv_heads, group, head_dim, size, blocks = 3, 3, 64, 32, 20
    keys = torch.randn(blocks, kv_heads, size, head_dim, generator=generator, device="cuda").bfloat16()
    values = torch.randn(blocks, kv_heads, size, head_dim, generator=generator, device="cuda").bfloat16()
    tables = torch.randperm(blocks, device="cuda").view(2, 10)
    queries = torch.randn(3, kv_heads, group, head_dim, generator=generator, device="cuda").bfloat16()
    lengths = [7, 300, 181]
    attend = paged_attention(head_dim, group, size)
    got = attend(
        queries,
        torch.tensor([0, 1, 1], dtype=torch.int32, device="cuda"),
        tables.int(),
        keys,
        values,
        torch.tensor(lengths, dtype=torch.int32, device="cuda"),
        head_dim**-0.5,
    )
    expected = paged_torch.decode_attention(
        torch, queries.view(3, -1, head_dim).float(), tables[[0, 1, 1]], keys.float(), values.float(), lengths
    )
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)


def test_graph_decode_steps_give_the_eager_steps_logits(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).to("cuda").eval()
    weights = LlamaWeights(model, torch.float32)
    outs = []
    for graphs in (True, False):
        runner = FixedRows(TorchRunner(weights, cuda_graphs=graphs), 3, 128)
        assert (runner.runner.graphs is not None) == graphs
        runner.forward([], [], [(0, list(range(3, 40)), 0), (1, list(range(50, 60)), 0), (2, [9, 8, 7], 0)])
        steps = [runner.forward([5, 6, 7], [37 + i, 10 + i, 3 + i]) for i in range(4)]
        steps.append(runner.forward([5], [41]))  # a smaller batch: another graph
        outs.append(torch.cat(steps).float())
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4)


def test_the_model_weights_are_held_once(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).to("cuda").eval()
    loaded = torch.cuda.memory_allocated()
    runners = model_runner_factory(model, release_model=True)
    # the layout (fused projections) replaces the model's layers: about the model's bytes, not twice them
    assert torch.cuda.memory_allocated() < loaded * 1.1
    assert runners().w.layers


def test_greedy_answers_on_the_gpu_are_the_cpus(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    prompts = [[(5 * i + j) % 300 + 3 for j in range(20 + 7 * i)] for i in range(6)]
    answers = []
    for device in ("cpu", "cuda"):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).to(device).eval()
        batcher = ContinuousBatcher(model, tokenizer, max_num_seqs=8, block_size=16)
        seqs = [batcher.add(p, SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)) for p in prompts]
        while batcher.has_work():
            batcher.step()
        answers.append([s.generated for s in seqs])
    assert answers[0] == answers[1]


def test_the_kv_budget_follows_the_devices_free_memory(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).to("cuda").eval()
    runner = TorchRunner(LlamaWeights(model, torch.bfloat16))
    free, total = torch.cuda.mem_get_info()
    peak = runner.step_peak_bytes(256, 64)
    assert peak > 0 and not runner.keys  # measured, and the probe's pools dropped
    budget = runner.device_kv_budget(512, 64, 0.5)
    assert 0 < budget < total * 0.5
    batcher = ContinuousBatcher(model, AutoTokenizer.from_pretrained(tiny_llama), gpu_memory_utilization=0.5)
    assert batcher.pool.num_blocks * batcher.runner.block_bytes(batcher.block_size) <= budget * 1.01
