"""The fp32 linear layers of a decode step: servelm's skinny kernel against torch's product, at each token count.

    python benchmarks/skinny_linear.py [--model smollm2|tiny] [--tokens 1,2,3,4,6,8,12,16,24,32] [--repeat 7] \
        [--out FILE.json]

Every linear layer of the model's shape (its own weights, so the step reads them from memory as a server's does:
30 layers and the vocabulary projection of SmolLM2 are 538 MB in fp32) is applied once to ``tokens`` rows, by
``runners/skinny_linear.py`` and by ``torch.nn.functional.linear`` (MKL's sgemm), the two alternating within each
repeat (the machine drifts). Medians in ms and the ratio torch / skinny (above 1: the kernel is faster). The
runner's window (``skinny_window``) comes from this. To measure what an AVX2-only server gets on a machine with
AVX-512, run it with ``cpu_features.AVX2_SWITCHES`` set (``SERVELM_CPU_FEATURES_OFF=avx512,avx_vnni
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 NUMBA_CPU_NAME=haswell
NUMBA_CPU_FEATURES=+avx2``; the provenance records them). Prints one JSON object, also written to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from json_report import emit


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", choices=("smollm2", "tiny"))
    parser.add_argument("--tokens", default="1,2,3,4,6,8,12,16,24,32", help="rows of a step, comma-separated")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoConfig

    from servelm.flavors.engine.attention.cpu_kernel import set_kernel_threads
    from servelm.flavors.engine.runners.skinny_linear import skinny_kernel, skinny_window
    from servelm.flavors.engine.runners.skinny_linear import skinny_linear as skinny
    from servelm.flavors.transformers import smollm2, tiny_model

    config = AutoConfig.from_pretrained(smollm2() if args.model == "smollm2" else tiny_model("llama"))
    kernel = skinny_kernel()
    if kernel is None:
        raise SystemExit("the skinny kernel does not run here (not an x86 CPU, or numba missing)")
    set_kernel_threads(torch.get_num_threads())
    hidden, mlp = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    shapes = [(heads * head_dim + 2 * kv, hidden), (hidden, heads * head_dim), (2 * mlp, hidden), (hidden, mlp)]
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(o, i, generator=generator) for _ in range(config.num_hidden_layers) for o, i in shapes]
    weights.append(torch.randn(config.vocab_size, hidden, generator=generator))  # [vocab, hidden]
    megabytes = sum(w.numel() * 4 for w in weights) / 1e6

    rows = []
    with torch.inference_mode():
        for tokens in (int(t) for t in args.tokens.split(",")):
            inputs = {w.shape[1]: torch.randn(tokens, w.shape[1], generator=generator) for w in weights}

            def in_kernel(inputs: dict[int, Any] = inputs) -> None:
                for w in weights:
                    skinny(kernel, inputs[w.shape[1]], w, None)

            def in_torch(inputs: dict[int, Any] = inputs) -> None:
                for w in weights:
                    torch.nn.functional.linear(inputs[w.shape[1]], w)

            times: dict[str, list[float]] = {"skinny": [], "torch": []}
            for i in range(args.repeat + 1):  # the first round warms up
                for name, run in (("skinny", in_kernel), ("torch", in_torch)):
                    start = time.perf_counter()
                    run()
                    if i:
                        times[name].append((time.perf_counter() - start) * 1000)
            skinny_ms, torch_ms = statistics.median(times["skinny"]), statistics.median(times["torch"])
            rows.append(
                {
                    "tokens": tokens,
                    "skinny_ms": round(skinny_ms, 2),
                    "torch_ms": round(torch_ms, 2),
                    "torch_over_skinny": round(torch_ms / skinny_ms, 2),
                    "skinny_gb_per_s": round(megabytes / skinny_ms, 1),
                }
            )
            print(rows[-1], file=sys.stderr)
    report = {
        "model": args.model,
        "weights_mb": round(megabytes, 1),
        "threads": torch.get_num_threads(),
        "window": list(skinny_window()),
        "steps": rows,
    }
    emit(report, args.out)
    return report


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
