"""One step of the onnx engine's runner, the export cut at its attention nodes against the whole graph.

    python benchmarks/onnx_step.py [--model smollm2|tiny] [--precision fp32|int4] [--rows 1,4,16] \
        [--positions 300] [--prefill 256] [--repeat 5] [--transformers] [--out FILE.json]

The two ways ``OrtRunner`` runs an export (``--kv-cache-dtype``): ``bfloat16``, the pieces of the cut graph
with servelm's kernels over a bf16 cache between them (``flavors/engine/runners/onnx_layered.py``), and ``float32``,
the whole graph with onnxruntime's GroupQueryAttention over an fp32 cache. For each count in ``--rows``,
that many sequences of ``--positions`` cached positions take decode steps (a token each); then one prompt of
``--prefill`` tokens is computed. Each way runs in a process of its own (the two hold thread pools that
would spin into each other in one process), the two alternating ``--repeat`` times (the machine drifts);
medians in ms and the ratio whole / cut (above 1: the cut graph is faster). Prints one JSON object, also
written to ``--out``. Where the cut graph cannot run (a CPU without avx512_bf16, or one switched off with
``SERVELM_CPU_FEATURES_OFF``), it says so in one line and times the whole graph alone (``cut_ms`` null).
With ``--transformers``, the transformers engine's runner (``runners/llama.py``, in the dtype it picks on this
CPU: fp32 without native bf16, unquantized whatever ``--precision`` says) takes the same steps on the same
checkpoint, a third process in each round (``transformers_ms``, and ``transformers_over_whole``: below 1 it is faster
than the whole graph).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from json_report import emit

WAYS: tuple[str, ...] = ("bfloat16", "float32")  # kv_cache_dtype: the cut graph, the whole graph


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", choices=("smollm2", "tiny"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8", "int4"))
    parser.add_argument("--rows", default="1,4,16", help="sequences decoded together, comma-separated")
    parser.add_argument("--positions", type=int, default=300, help="cached positions per sequence")
    parser.add_argument("--prefill", type=int, default=256, help="prompt tokens of the prefill step (0: none)")
    parser.add_argument("--steps", type=int, default=10, help="steps timed together in each measurement")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--transformers", action="store_true", help="time the transformers engine's runner too")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # "GENAI_DIR:KV_CACHE_DTYPE"
    args = parser.parse_args(argv)
    rows = [int(r) for r in args.rows.split(",")]
    if args.child:
        path, way = args.child.rsplit(":", 1)
        timing = measure_torch if way == "transformers" else measure
        print(json.dumps(timing(path, way, rows, args.positions, args.prefill, args.steps)))
        return {}

    from servelm.flavors.engine.attention.bf16_intrinsics import has_bf16_dot
    from servelm.flavors.engine.cpu_features import why_not
    from servelm.flavors.onnx import export
    from servelm.flavors.transformers import smollm2, tiny_model

    ways = WAYS
    if not has_bf16_dot():
        print(f"onnx_step: no cut graph here ({why_not('avx512_bf16')}): timing the whole graph alone", file=sys.stderr)
        ways = ("float32",)
    source = smollm2() if args.model == "smollm2" else tiny_model("llama")
    if args.transformers:
        ways = (*ways, "transformers")
    times: dict[str, dict[str, list[float]]] = {way: {} for way in ways}
    with tempfile.TemporaryDirectory() as work:
        genai_dir = export(source, os.path.join(work, "genai"), precision=args.precision)
        for _ in range(args.repeat):
            for way in ways:
                folder = source if way == "transformers" else genai_dir
                child = [sys.executable, os.path.abspath(__file__), "--child", f"{folder}:{way}"]
                child += ["--rows", args.rows, "--positions", str(args.positions), "--prefill", str(args.prefill)]
                child += ["--steps", str(args.steps)]
                done = subprocess.run(child, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"onnx_step: the {way} child failed (exit {done.returncode}):\n{done.stderr}")
                for name, took in json.loads(done.stdout.strip().splitlines()[-1]).items():
                    times[way].setdefault(name, []).append(took)
    steps = []
    for name in times["float32"]:
        whole = statistics.median(times["float32"][name])
        cut = statistics.median(times["bfloat16"][name]) if "bfloat16" in times else None
        row: dict[str, Any] = {
            "step": name,
            "cut_ms": round(cut, 2) if cut else None,
            "whole_ms": round(whole, 2),
            "whole_over_cut": round(whole / cut, 2) if cut else None,
        }
        if "transformers" in times:
            torch_ms = statistics.median(times["transformers"][name])
            row.update(transformers_ms=round(torch_ms, 2), transformers_over_whole=round(torch_ms / whole, 2))
        steps.append(row)
    report = {
        "model": args.model,
        "precision": args.precision,
        "repeat": args.repeat,
        "ways": list(ways),
        "steps": steps,
    }
    emit(report, args.out)
    return report


def measure(genai_dir: str, way: str, rows: list[int], positions: int, prefill: int, steps: int) -> dict[str, float]:
    """Milliseconds of one step, by step name, in this process: decode steps of each row count, one prefill."""
    from servelm.flavors.engine.fixed_rows import FixedRows
    from servelm.flavors.engine.runners.onnx import OrtRunner
    from servelm.flavors.onnx.model import OnnxModel

    decoder = OnnxModel(genai_dir, "cpu", kv_cache_dtype=way).decoder  # the engine's own thread count
    most = max(rows)
    runner = FixedRows(OrtRunner(decoder), most, max(positions, prefill) + steps + 1)
    return timed_steps(runner, decoder.vocab_size, rows, positions, prefill, steps)


def measure_torch(source: str, way: str, rows: list[int], positions: int, prefill: int, steps: int) -> dict[str, float]:
    """The same steps in the transformers engine's runner, on the checkpoint at ``source``, in the dtype (and on the
    thread count) the engine picks here."""
    import torch
    from transformers import AutoModelForCausalLM

    from servelm.flavors.engine.fixed_rows import FixedRows
    from servelm.flavors.engine.runners.llama import LlamaWeights, TorchRunner
    from servelm.flavors.engine.threads import default_threads
    from servelm.flavors.transformers.device import choose_device

    device, dtype = choose_device(None, None, None)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device).eval()
    weights = LlamaWeights(model, dtype)
    torch.set_num_threads(default_threads(sum(p.numel() * p.element_size() for p in model.parameters())))
    runner = FixedRows(TorchRunner(weights), max(rows), max(positions, prefill) + steps + 1)
    return timed_steps(runner, weights.vocab_size, rows, positions, prefill, steps)


def timed_steps(
    runner: Any, vocab_size: int, rows: list[int], positions: int, prefill: int, steps: int
) -> dict[str, float]:
    """Milliseconds of one step of ``runner`` (a ``FixedRows``), by step name: decode steps of each row count over
    ``positions`` cached positions, one prefill of ``prefill`` tokens."""
    import numpy as np

    rng = np.random.default_rng(0)
    for row in range(max(rows)):  # the cached positions each decoding sequence attends over
        runner.forward([], [], [(row, rng.integers(100, vocab_size, positions).tolist(), 0)])
    result = {}
    for count in rows:
        tokens = rng.integers(100, vocab_size, count).tolist()
        for _ in range(2):  # warm-up (each step rewrites the same position)
            runner.forward(tokens, [positions] * count, [])
        start = time.perf_counter()
        for _ in range(steps):
            runner.forward(tokens, [positions] * count, [])
        result[f"decode {count} rows at {positions} positions"] = (time.perf_counter() - start) / steps * 1000
    if prefill:
        prompt = rng.integers(100, vocab_size, prefill).tolist()
        runner.forward([], [], [(0, prompt, 0)])  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            runner.forward([], [], [(0, prompt, 0)])
        result[f"prefill of {prefill} tokens"] = (time.perf_counter() - start) / 3 * 1000
    return result


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
