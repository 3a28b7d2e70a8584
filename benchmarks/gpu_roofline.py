"""The own engine's batch-1 decode step on a GPU against the memory roofline.

    python benchmarks/gpu_roofline.py [--model tiny|smollm2|smollm2-shape] [--prompt 250] [--steps 200] [--out F.json]

A decode step of one sequence reads every weight of the layers and the vocabulary projection once, and the KV of
every cached position: its bytes over the device's memory bandwidth is the floor no engine goes under (gpt-fast
reaches about 60% of it on small batches). This times the runner's decode step at batch 1 (CUDA graphs as the server
runs them) after a ``--prompt``-token prompt, measures the device's copy bandwidth (a device-to-device copy, bytes
read and written), and reports the step's bytes / time / bandwidth as the fraction of the roofline reached.

``smollm2-shape``: SmolLM2-135M-Instruct's layers (30 layers, hidden 576, 9 query and 3 kv heads) with random weights
and the tiny tokenizer's vocabulary, for machines SmolLM2's 98 MB file cannot travel to; its bytes are counted as
they are. Prints one JSON object, also written to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from json_report import emit


def model_dir(name: str) -> str:
    from servelm.flavors.transformers import smollm2, smollm2_shaped, tiny_model

    return {"tiny": tiny_model, "smollm2": smollm2, "smollm2-shape": smollm2_shaped}[name]()


def copy_bandwidth(torch: Any, mib: int = 2048, repeat: int = 10) -> float:
    """The device's memory bandwidth in GB/s: a device-to-device copy of ``mib`` MiB, bytes read plus written."""
    source = torch.empty(mib << 20, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        target.copy_(source)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * source.numel() / statistics.median(times) / 1e9


def measure(name: str, prompt: int, steps: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from servelm.flavors.engine.fixed_rows import FixedRows
    from servelm.flavors.engine.runners.llama import LlamaWeights, TorchRunner

    model = AutoModelForCausalLM.from_pretrained(model_dir(name), dtype=torch.bfloat16, device_map="cuda")
    weights = LlamaWeights(model, torch.bfloat16)
    runner = FixedRows(TorchRunner(weights), 1, prompt + steps + 8)
    rng = torch.Generator().manual_seed(0)
    ids = torch.randint(3, weights.vocab_size, (prompt,), generator=rng).tolist()
    runner.forward([], [], [(0, ids, 0)])
    graphs = runner.runner.graphs
    times = []
    for i in range(steps):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        runner.forward([5], [prompt + i], [])
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    step = statistics.median(times[5:])
    layer_bytes = sum(t.numel() * t.element_size() for layer in weights.layers for t in _tensors(layer))
    head_bytes = weights.lm_head[0].numel() * weights.lm_head[0].element_size()
    kv_bytes = TorchRunner(weights).block_bytes(1) * (prompt + steps // 2)  # the mean cached length
    read = layer_bytes + head_bytes + kv_bytes + weights.hidden * 2  # + one embedding row
    bandwidth = copy_bandwidth(torch)
    achieved = read / step / 1e9
    return {
        "model": name,
        "device": torch.cuda.get_device_name(),
        "prompt_tokens": prompt,
        "cuda_graphs": graphs is not None and not graphs.broken,
        "attention": "triton" if runner.runner.gpu_kernel is not None else "torch",
        "step_ms_median": round(step * 1000, 4),
        "step_ms_p90": round(sorted(times[5:])[int(0.9 * (len(times) - 5))] * 1000, 4),
        "bytes_per_step": read,
        "achieved_gb_s": round(achieved, 1),
        "copy_bandwidth_gb_s": round(bandwidth, 1),
        "roofline_fraction": round(achieved / bandwidth, 3),
        "tokens_per_s_batch1": round(1 / step, 1),
    }


def _tensors(layer: dict[str, Any]) -> list[Any]:
    out = []
    for value in layer.values():
        if isinstance(value, tuple):
            out += [t for t in value if t is not None and hasattr(t, "numel")]
        elif hasattr(value, "numel"):
            out.append(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-shape", choices=("tiny", "smollm2", "smollm2-shape"))
    parser.add_argument("--prompt", type=int, default=250)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("refused: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        raise SystemExit(2)
    emit(measure(args.model, args.prompt, args.steps), args.out)


if __name__ == "__main__":
    main()
