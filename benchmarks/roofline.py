"""What this machine allows a model's decode steps and prompts: the floors any engine meets on it.

    python benchmarks/roofline.py [--model smollm2|tiny] [--threads 2] [--prompt 251] [--max-tokens 128] \
        [--clients 16] [--read-mib 1024] [--repeat 7] [--out FILE.json]

Measures, on ``--threads`` threads:
- the memory's read rate: a sum over ``--read-mib`` of fp32, far larger than any cache (GB/s; on a shared
  machine it moves with the neighbours' load, so the range of the repeats is reported too);
- matrix products at a prompt's shape ([256, hidden] x [hidden, intermediate]) and at a decode step of
  ``--clients`` rows, with the weights in cache (GFLOP/s): fp32 and 4-bit blocks in onnxruntime, as the
  onnx engine runs its exports (MLAS's fp32 products are the faster ones here), bf16 in torch (oneDNN), as
  vLLM and the transformers engine run theirs.

From these and the model's weights it gives, for each precision (fp32, bf16, int4 in blocks of 32 with an
fp32 scale and a 4-bit zero point):
- ``step_floor_ms``: one decode step of one sequence reads every weight of the layers and the vocabulary
  projection once, so it takes at least their bytes over the read rate;
- ``prompt_floor_ms``: a ``--prompt``-token prompt is at least 2 x the layers' weights x tokens of
  arithmetic (and the vocabulary projection of its last token) at the prompt-shaped product's rate;
- ``one_client_tok_s``: the output tok/s of one client of the ``real`` workload (``--prompt`` tokens in,
  ``--max-tokens`` out) if every step ran at its floor;
- ``clients_tok_s``: the output tok/s ``--clients`` clients could reach if the machine did nothing but
  the products at their measured rates (each output token: one decode row, and its share of a prompt).
These are ceilings no engine reaches; benchmarks/compare.py measures what each one does. Prints one JSON
object, also written to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from json_report import emit

MIB = 1 << 20
BYTES_PER_WEIGHT = {"fp32": 4.0, "bf16": 2.0, "int4": (32 * 0.5 + 4 + 0.5) / 32}  # int4: block of 32 + scale + zp


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", choices=("smollm2", "tiny"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=251, help="prompt tokens of the workload")
    parser.add_argument("--max-tokens", type=int, default=128, help="output tokens of the workload")
    parser.add_argument("--clients", type=int, default=16, help="rows of the batched decode step")
    parser.add_argument("--read-mib", type=int, default=1024, help="MiB summed to measure the read rate")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    hidden, intermediate, layers, vocabulary = model_shape(args.model)
    weights = layers + vocabulary  # read by each decode step
    reads = rates_of(args.repeat, args.read_mib * MIB, memory_read(args.read_mib * MIB))
    read_gb_s = statistics.median(reads)
    rates = {}  # GFLOP/s by (precision, rows)
    for rows in (256, args.clients):
        flops = 2 * rows * hidden * intermediate
        for precision in ("fp32", "int4"):
            product = ort_product(rows, hidden, intermediate, args.threads, precision == "int4")
            rates[(precision, rows)] = median_rate(args.repeat, flops, product)
        rates[("bf16", rows)] = median_rate(args.repeat, flops, bf16_product(rows, hidden, intermediate))
    precisions = {}
    for precision, per_weight in BYTES_PER_WEIGHT.items():
        step_s = weights * per_weight / (read_gb_s * 1e9)  # seconds
        # seconds: every prompt token through the layers, the vocabulary projection for the last one only
        prompt_s = 2 * (layers * args.prompt + vocabulary) / (rates[(precision, 256)] * 1e9)
        request_s = prompt_s + (args.max_tokens - 1) * step_s  # the first token comes with the prompt
        # per output token at --clients: one decode row plus its share of its prompt, at the products' rates
        token_s = 2 * weights / (rates[(precision, args.clients)] * 1e9) + prompt_s / args.max_tokens
        precisions[precision] = {
            "weight_mb": round(weights * per_weight / 1e6, 1),
            "step_floor_ms": round(step_s * 1000, 3),
            "prompt_floor_ms": round(prompt_s * 1000, 3),
            "one_client_tok_s": round(args.max_tokens / request_s, 1),
            "clients_tok_s": round(1 / token_s, 1),
            "prompt_gflop_s": round(rates[(precision, 256)], 1),
            "decode_gflop_s": round(rates[(precision, args.clients)], 1),
        }
    report = {
        "model": args.model,
        "threads": args.threads,
        "weights_read_per_step": weights,
        "read_gb_s": round(read_gb_s, 1),
        "read_gb_s_range": [round(min(reads), 1), round(max(reads), 1)],
        "workload": {"prompt": args.prompt, "max_tokens": args.max_tokens, "clients": args.clients},
        "precisions": precisions,
    }
    emit(report, args.out)
    return report


def model_shape(model: str) -> tuple[int, int, int, int]:
    """(hidden size, intermediate size, the layers' weights, the vocabulary projection's weights): a decode
    step reads both sets of weights; the embedding lookup reads one row and the norms are negligible."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from servelm.flavors.transformers import smollm2, tiny_model

    config = AutoConfig.from_pretrained(smollm2() if model == "smollm2" else tiny_model("llama"))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    head = skeleton.get_output_embeddings()
    linear = sum(m.weight.numel() for m in skeleton.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    return config.hidden_size, config.intermediate_size, linear, head.weight.numel()


def median_rate(repeat: int, work: float, run: Callable[[], None]) -> float:
    """The median over ``repeat`` timings of ``work`` units done by ``run``, in units per ns (GB/s, GFLOP/s)."""
    return statistics.median(rates_of(repeat, work, run))


def rates_of(repeat: int, work: float, run: Callable[[], None]) -> list[float]:
    """``repeat`` timings of ``work`` units done by ``run`` (each over at least 0.2 s), in units per ns."""
    run()  # warm-up
    rates = []
    for _ in range(repeat):
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < 0.2:
            run()
            calls += 1
        rates.append(work * calls / (time.perf_counter() - start) / 1e9)
    return rates


def memory_read(size: int) -> Callable[[], None]:
    """A sum over ``size`` bytes of fp32."""
    import torch

    data = torch.ones(size // 4, dtype=torch.float32)

    def run() -> None:
        data.sum()

    return run


def bf16_product(rows: int, hidden: int, intermediate: int) -> Callable[[], None]:
    """[rows, hidden] x [hidden, intermediate] in bf16 in torch (oneDNN on CPU), the weights stored as a
    Linear's: what vLLM and servelm's transformers engine run."""
    import torch

    x = torch.randn(rows, hidden).to(torch.bfloat16)
    w = torch.randn(intermediate, hidden).to(torch.bfloat16)

    def run() -> None:
        torch.nn.functional.linear(x, w)

    return run


def ort_product(rows: int, hidden: int, intermediate: int, threads: int, int4: bool) -> Callable[[], None]:
    """The same product in onnxruntime, as the onnx engine runs an export's: fp32 weights (MatMul, MLAS),
    or weights in 4-bit blocks of 32 (MatMulNBits with int8 compute, accuracy level 4, as the model builder
    writes int4 exports for CPU)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int4:
        block = 32
        blocks = hidden // block
        initializers = [
            numpy_helper.from_array(rng.integers(0, 255, (intermediate, blocks, block // 2), dtype=np.uint8), "w"),
            numpy_helper.from_array(rng.random(intermediate * blocks, dtype=np.float32) * 0.01, "scales"),
            numpy_helper.from_array(rng.integers(0, 255, intermediate * ((blocks + 1) // 2), dtype=np.uint8), "zeros"),
        ]
        node = helper.make_node(
            "MatMulNBits",
            ["x", "w", "scales", "zeros"],
            ["y"],
            domain="com.microsoft",
            K=hidden,
            N=intermediate,
            bits=4,
            block_size=block,
            accuracy_level=4,
        )
    else:
        initializers = [numpy_helper.from_array(rng.standard_normal((hidden, intermediate), dtype=np.float32), "w")]
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "product",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", intermediate])],
        initializer=initializers,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        helper.make_model(graph, opset_imports=opsets).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    x = rng.standard_normal((rows, hidden), dtype=np.float32)

    def run() -> None:
        session.run(None, {"x": x})

    return run


if __name__ == "__main__":
    main()
