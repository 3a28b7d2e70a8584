"""One engine step of the transformers flavor's torch runner against the model's own forward, same batch.

    python benchmarks/runner_step.py [--model smollm2|tiny] [--rows 16] [--positions 300,1500] \
        [--prefill 250] [--quantization int8] [--torch-attention] [--repeat 7] [--out FILE.json]

For each context length in ``--positions``: ``--rows`` sequences of that many cached positions take one
decode step (a token each), in servelm's runner (``runner.py``, over its own KV cache) and in the Hugging
Face model's forward (``past_key_values`` a DynamicCache cropped back after each call); then one prompt
of ``--prefill`` tokens is computed by each. The two alternate within each repeat (the machine drifts);
medians in ms and the ratio HF / servelm (above 1: servelm's step is faster). Both run in the dtype servelm
picks on this machine; with ``--quantization int8`` only servelm's linear layers are int8; with
``--torch-attention`` servelm's steps attend with torch's attention instead of its kernel
(``decode_attention.py``), to see what the kernel is worth. Prints one JSON object, also written to
``--out``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from json_report import emit


def timed(step: Callable[[], Any]) -> float:
    """Milliseconds of one call of ``step``."""
    start = time.perf_counter()
    step()
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", choices=("smollm2", "tiny"))
    parser.add_argument("--rows", type=int, default=16, help="sequences decoded together")
    parser.add_argument("--positions", default="300,1500", help="cached positions per sequence, comma-separated")
    parser.add_argument("--prefill", type=int, default=250, help="prompt tokens of the prefill step (0: none)")
    parser.add_argument("--quantization", default=None, choices=(None, "int8"))
    parser.add_argument("--torch-attention", action="store_true", help="attention in torch, not servelm's kernel")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from servelm.flavors.engine.runners.llama import LlamaWeights
    from servelm.flavors.transformers import smollm2, tiny_model
    from servelm.flavors.transformers.device import choose_device

    path = smollm2() if args.model == "smollm2" else tiny_model("llama")
    device, dtype = choose_device(None, None, None)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    weights = LlamaWeights(model, dtype, args.quantization)
    rng = np.random.default_rng(0)
    rows = args.rows
    results: list[dict[str, Any]] = []

    for positions in (int(p) for p in args.positions.split(",")):
        times = decode_times(model, weights, rows, positions, rng, args.repeat, not args.torch_attention)
        results.append(step_row(f"decode {rows} rows at {positions} positions", times))
    if args.prefill:
        times = prefill_times(model, weights, args.prefill, rng, args.repeat, not args.torch_attention)
        results.append(step_row(f"prefill of {args.prefill} tokens", times))

    report = {
        "model": args.model,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "quantization": args.quantization,
        "decode_attention": "torch" if args.torch_attention else "kernel",
        "threads": torch.get_num_threads(),
        "steps": results,
    }
    emit(report, args.out)
    return report


def decode_times(
    model: Any, weights: Any, rows: int, positions: int, rng: Any, repeat: int, kernel: bool = True
) -> dict[str, list[float]]:
    """Milliseconds of one decode step of ``rows`` sequences with ``positions`` cached, servelm's runner and
    the model's forward alternating."""
    import torch
    from transformers import DynamicCache

    from servelm.flavors.engine.fixed_rows import FixedRows
    from servelm.flavors.engine.runners.llama import TorchRunner

    device = weights.device
    prompts = rng.integers(100, weights.vocab_size, (rows, positions))  # [rows, positions]
    tokens = rng.integers(100, weights.vocab_size, rows).tolist()  # [rows]
    runner = FixedRows(TorchRunner(weights, fused_decode=kernel), rows, positions + 1)
    for row in range(rows):
        runner.forward([], [], [(row, prompts[row].tolist(), 0)])
    times: dict[str, list[float]] = {"servelm": [], "hf": []}
    with torch.inference_mode():
        cache = DynamicCache()
        model(torch.tensor(prompts, device=device), past_key_values=cache, use_cache=True)
        next_ids = torch.tensor(tokens, device=device)[:, None]  # [rows, 1]

        def hf() -> None:
            model(next_ids, past_key_values=cache, use_cache=True)
            cache.crop(-1)  # back to ``positions`` cached

        def servelm() -> None:
            runner.forward(tokens, [positions] * rows, [])

        for i in range(repeat + 1):  # the first round warms up
            for name, step in (("servelm", servelm), ("hf", hf)):
                took = timed(step)
                if i:
                    times[name].append(took)
    return times


def prefill_times(
    model: Any, weights: Any, count: int, rng: Any, repeat: int, kernel: bool = True
) -> dict[str, list[float]]:
    """Milliseconds of computing one prompt of ``count`` tokens, servelm's runner and the model's forward
    alternating."""
    import torch

    from servelm.flavors.engine.fixed_rows import FixedRows
    from servelm.flavors.engine.runners.llama import TorchRunner

    prompt = rng.integers(100, weights.vocab_size, count).tolist()  # [count]
    runner = FixedRows(TorchRunner(weights, fused_decode=kernel), 1, count)
    ids = torch.tensor([prompt], device=weights.device)  # [1, count]
    times: dict[str, list[float]] = {"servelm": [], "hf": []}
    with torch.inference_mode():
        steps = (("servelm", lambda: runner.forward([], [], [(0, prompt, 0)])), ("hf", lambda: model(ids)))
        for i in range(repeat + 1):
            for name, step in steps:
                took = timed(step)
                if i:
                    times[name].append(took)
    return times


def step_row(name: str, times: dict[str, list[float]]) -> dict[str, Any]:
    """Medians (ms) of both systems and the ratio HF / servelm."""
    servelm, hf = statistics.median(times["servelm"]), statistics.median(times["hf"])
    return {
        "step": name,
        "servelm_ms": round(servelm, 2),
        "hf_ms": round(hf, 2),
        "hf_over_servelm": round(hf / servelm, 2),
    }


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
