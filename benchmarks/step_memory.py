"""How the torch runner's resident memory follows the number of distinct step sizes it has run.

    python benchmarks/step_memory.py [--model smollm2|tiny] [--first 1] [--last 600] [--stride 3] [--out FILE.json]

The transformers flavor's torch runner computes one forward pass per step size from ``--first`` to
``--last`` prompt tokens (stride ``--stride``), beside two decode rows, as a scheduler's steps would
vary; then it frees its KV cache and the heap is trimmed. Resident memory (RSS, MiB) is read after
loading, every 20 sizes, and after the release. Memory that stays after the release is held per step
shape by the libraries underneath (oneDNN builds and keeps kernels per shape); the runner rounds step
sizes up to a bounded set (``runner.padded_step_tokens``), and ``--exact`` turns that off to show what
it bounds. Prints one JSON object, also written to ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import tree_rss  # noqa: E402


def rss_mib() -> float:
    return tree_rss(os.getpid()) / 2**20


def measure(model: str, sizes: range, exact: bool) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from servelm.flavors.engine.fixed_rows import FixedRows
    from servelm.flavors.engine.memory import trim_heap
    from servelm.flavors.engine.runners import llama as runner_module
    from servelm.flavors.engine.runners.llama import LlamaWeights, TorchRunner
    from servelm.flavors.transformers import smollm2, tiny_model

    lm = AutoModelForCausalLM.from_pretrained(smollm2() if model == "smollm2" else tiny_model(), dtype=torch.float32)
    weights = LlamaWeights(lm, torch.bfloat16)
    del lm
    gc.collect()
    trim_heap()
    if exact:
        runner_module.EXACT_STEP_TOKENS = sizes.stop + 2
    runner = FixedRows(TorchRunner(weights), 3, sizes.stop + 1)
    loaded = rss_mib()
    trace = []
    with torch.inference_mode():
        for i, count in enumerate(sizes):
            runner.forward([1, 2], [5, 6], [(2, list(range(100, 100 + count)), 0)])
            if i % 20 == 0:
                trace.append([count, round(rss_mib())])
    peak = rss_mib()
    del runner
    gc.collect()
    trim_heap()
    return {
        "model": model,
        "step_sizes": len(sizes),
        "padded": not exact,
        "loaded_mib": round(loaded),
        "after_steps_mib": round(peak),
        "after_release_mib": round(rss_mib()),
        "trace": trace,  # [prompt tokens in the step, RSS MiB]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--last", type=int, default=600)
    parser.add_argument("--stride", type=int, default=3)
    parser.add_argument("--exact", action="store_true", help="run every step at its exact size (no padding)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = measure(args.model, range(args.first, args.last, args.stride), args.exact)
    text = json.dumps(result)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
