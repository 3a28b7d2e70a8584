"""Serving more than the KV cache holds: a budget that fits ``--fits`` sequences, ``--clients`` of them at once.

    python benchmarks/kv_budget.py [--model smollm2] [--clients 64] [--fits 16] [--max-tokens 64] [--out F.json]

Starts the transformers engine twice, one after the other: with ``--kv-cache-memory`` set to what ``--fits``
sequences of the ``long`` workload (~1500-token prompts) and their answers need, then with the default budget (room
for all); ``--control`` a third time like the second. Each gets the same ``--clients`` requests at once (greedy,
non-streamed, fp32 by default: in bf16 the batch a row shares a step with moves its rounding, and so greedy answers,
whatever the budget). Reports whether every request completed under the small budget, how many answers equal the
unconstrained run's (and the control's), both runs' seconds, and the
constrained server's resident memory growth (its process tree's peak over its idle, loaded size) against the budget:
preemption keeps the engine inside its budget instead of failing requests or growing. Prints one JSON object, also
written to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp
from json_report import emit
from measure import MemorySampler, tree_rss
from serve import workload_messages
from systems import PYTHON, free_port


def kv_bytes_per_token(checkpoint: str, dtype_bytes: int) -> int:
    import json

    with open(os.path.join(checkpoint, "config.json")) as f:
        config = json.load(f)
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim", config["hidden_size"] // heads)
    return 2 * config["num_hidden_layers"] * config.get("num_key_value_heads", heads) * head_dim * dtype_bytes


async def ask_all(base: str, clients: int, max_tokens: int) -> list[str]:
    """Every request at once; the answers' text in order (an empty string for a failed request)."""
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(index: int) -> str:
            body = {
                "model": "llm",
                "messages": workload_messages("long", index),
                "max_tokens": max_tokens,
                "temperature": 0.0,
            }
            async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
                if resp.status != 200:
                    return ""
                payload = await resp.json()
                return str(payload["choices"][0]["message"]["content"])

        return list(await asyncio.gather(*(one(i) for i in range(clients))))


def serve_and_ask(model_dir: str, extra: list[str], clients: int, max_tokens: int) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [PYTHON, "-m", "servelm.serving.cli", "serve", "-m", model_dir, "--served-model-name", "llm"]
    argv += ["--port", str(port), "--log-level", "warning", "--max-num-seqs", str(clients), *extra]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            import urllib.request

            while True:
                try:
                    with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"the server did not start: {log.read()[-2000:].decode(errors='replace')}")
                time.sleep(0.5)
            time.sleep(2)  # settled: the loaded, idle size
            idle = tree_rss(proc.pid)
            sampler = MemorySampler(proc.pid)
            start = time.perf_counter()
            answers = asyncio.run(ask_all(base, clients, max_tokens))
            seconds = time.perf_counter() - start
            memory = sampler.stop()
        finally:
            proc.terminate()
            proc.wait(60)
    return {
        "answers": answers,
        "seconds": round(seconds, 1),
        "idle_rss_mb": round(idle / 2**20, 1),
        "peak_rss_mb": memory["peak_rss_mb"],
        "growth_mb": round(memory["peak_rss_mb"] - idle / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", choices=("tiny", "smollm2"))
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--fits", type=int, default=16, help="sequences the constrained KV budget holds at once")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=("bfloat16", "float32"))
    parser.add_argument(
        "--control",
        action="store_true",
        help="a second unconstrained run, to show how far batching alone moves answers",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from servelm.flavors.transformers import save_model, smollm2, tiny_model

    with tempfile.TemporaryDirectory(prefix="servelm-kv-budget-") as work:
        checkpoint = smollm2() if args.model == "smollm2" else tiny_model()
        model_dir = os.path.join(work, "llm")
        save_model(checkpoint, model_dir)
        per_token = kv_bytes_per_token(checkpoint, 2 if args.dtype == "bfloat16" else 4)
        sequence_tokens = 1600 + args.max_tokens  # the longest prompt of the long workload, and its answer
        budget = args.fits * -(-sequence_tokens // 32) * 32 * per_token
        dtype = ["--dtype", args.dtype]
        budget_flag = ["--kv-cache-memory", str(budget)]
        constrained = serve_and_ask(model_dir, dtype + budget_flag, args.clients, args.max_tokens)
        roomy = serve_and_ask(model_dir, dtype, args.clients, args.max_tokens)
        control = serve_and_ask(model_dir, dtype, args.clients, args.max_tokens) if args.control else None
    same = sum(a == b and a != "" for a, b in zip(constrained["answers"], roomy["answers"]))
    report = {
        "model": args.model,
        "dtype": args.dtype,
        "clients": args.clients,
        "fits": args.fits,
        "max_tokens": args.max_tokens,
        "kv_cache_memory_bytes": budget,
        "kv_cache_memory_mb": round(budget / 2**20, 1),
        "completed": sum(a != "" for a in constrained["answers"]),
        "answers_equal_to_unconstrained": same,
        "constrained": {k: v for k, v in constrained.items() if k != "answers"},
        "unconstrained": {k: v for k, v in roomy.items() if k != "answers"},
        "growth_over_budget": round(constrained["growth_mb"] / (budget / 2**20), 3),
    }
    if control is not None:  # how far two unconstrained runs agree: what batching alone does to greedy answers
        report["unconstrained_runs_equal"] = sum(
            a == b and a != "" for a, b in zip(control["answers"], roomy["answers"])
        )
    emit(report, args.out)
    if report["completed"] != args.clients:
        sys.exit(1)


if __name__ == "__main__":
    main()
