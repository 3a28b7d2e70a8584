"""Prompt-chunk attention on a CPU: servelm's paged kernel against torch's scaled_dot_product_attention over the
chunk's gathered blocks, per layer. (The runner keeps prompt chunks in the kernel whatever this shows: torch's bf16
flash attention changes greedy answers, ``runners/llama.py`` says why.)

    python benchmarks/chunk_attention.py [--heads 9] [--kv-heads 3] [--head-dim 64] [--block-size 32] \
        [--cases 1x8@960,1x16@960,1x24@960,1x36@960,16x36@960,1x251@0,1x512@0] [--repeat 7] [--out FILE.json]

Each case ``CHUNKSxTOKENS@START`` is that many sequences' prompt chunks of TOKENS tokens at positions START..,
each attending to its START cached positions and causally among its own (SmolLM2's shapes by default, bf16
pools of 32-position blocks). The kernel (``attention/cpu_kernel.py``) takes every query at once, reading its
positions in place; torch gathers each chunk's blocks and calls SDPA once per chunk (``attention/paged_torch.py``).
Best of ``--repeat`` in ms, the ratio kernel / torch (above 1: torch is faster) and the largest difference between
their outputs. Needs a CPU where the kernel runs on bf16 instructions (avx512_bf16); elsewhere prompts never go
to the kernel, and this says so. Prints one JSON object, also written to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from json_report import emit  # noqa: E402


def best_ms(run: Callable[[], Any], repeat: int) -> float:
    run()  # compiled and warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def case(
    heads: int, kv_heads: int, head_dim: int, block_size: int, chunks: int, tokens: int, start: int, repeat: int
) -> dict[str, Any]:
    import numpy as np
    import torch

    from servelm.flavors.engine.attention.cpu_kernel import decode_kernel, set_kernel_threads
    from servelm.flavors.engine.attention.paged_torch import chunk_attention

    group, stop = heads // kv_heads, start + tokens
    blocks = -(-stop // block_size)
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(chunks * blocks, kv_heads, block_size, head_dim, generator=generator).bfloat16()
    values = torch.randn(chunks * blocks, kv_heads, block_size, head_dim, generator=generator).bfloat16()
    queries = torch.randn(chunks * tokens, heads, head_dim, generator=generator).bfloat16()  # [step tokens, ...]
    tables = np.arange(chunks * blocks, dtype=np.int64).reshape(chunks, blocks)  # [chunks, blocks]
    seqs = np.repeat(np.arange(chunks), tokens).astype(np.int64)  # [step tokens]
    lengths = np.tile(np.arange(start, stop), chunks).astype(np.int64) + 1  # [step tokens]
    kernel = decode_kernel(head_dim, group, torch.bfloat16, torch.device("cpu"), block_size)
    assert kernel is not None
    out = np.empty((chunks * tokens, heads, head_dim), np.float32)

    def bits(t: Any) -> Any:
        return t.contiguous().view(torch.int16).numpy().view(np.uint16)

    grouped, key_bits, value_bits = bits(queries.view(-1, kv_heads, group, head_dim)), bits(keys), bits(values)
    device_tables = torch.from_numpy(tables)
    set_kernel_threads(torch.get_num_threads())

    def in_kernel() -> None:
        kernel(grouped, seqs, tables, key_bits, value_bits, lengths, head_dim**-0.5, out)

    def in_torch() -> Any:
        with torch.inference_mode():
            return torch.cat(
                [
                    chunk_attention(
                        torch, queries[c * tokens : (c + 1) * tokens], device_tables[c], keys, values, start
                    )
                    for c in range(chunks)
                ]
            )

    kernel_ms, torch_ms = best_ms(in_kernel, repeat), best_ms(in_torch, repeat)
    return {
        "case": f"{chunks}x{tokens}@{start}",
        "kernel_ms": round(kernel_ms, 3),
        "torch_ms": round(torch_ms, 3),
        "kernel_over_torch": round(kernel_ms / torch_ms, 2),
        "max_difference": float(np.abs(out - in_torch().float().numpy()).max()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--cases", default="1x8@960,1x16@960,1x24@960,1x36@960,16x36@960,1x251@0,1x512@0")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    from servelm.flavors.engine.attention.cpu_kernel import on_bf16_instructions

    report: dict[str, Any] = {"shape": vars(args) | {"threads": torch.get_num_threads()}, "cases": []}
    if not on_bf16_instructions(args.head_dim, torch.bfloat16):
        report["skipped"] = "the kernel has no bf16-instruction path on this CPU: prompt chunks always go to torch here"
    else:
        for spec in args.cases.split(","):
            chunks, rest = spec.split("x")
            tokens, start = rest.split("@")
            report["cases"].append(
                case(
                    args.heads,
                    args.kv_heads,
                    args.head_dim,
                    args.block_size,
                    int(chunks),
                    int(tokens),
                    int(start),
                    args.repeat,
                )
            )
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
