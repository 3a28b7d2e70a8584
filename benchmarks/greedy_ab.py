"""Greedy A/B of two checkouts' servers: are the transformers engine's temperature-0 answers on the fidelity prompts
the same text before and after a change?

    python benchmarks/greedy_ab.py --python-a BEFORE/.venv/bin/python --python-b AFTER/.venv/bin/python \
        [--prompts 8] [--max-tokens 128] [--concurrency 1,16] [--out FILE.json]

Each side (A, then B: never both at once) saves SmolLM2-135M-Instruct as a model directory with its own servelm,
starts its own ``servelm serve --engine transformers`` on a free loopback port (as benchmarks/systems.py starts
``servelm-transformers``: one OMP thread, served as "tiny"), and sends the prompts ``workload_messages("real", i,
"fidelity")`` (i < --prompts) as non-streamed chat completions at temperature 0: at each concurrency level, up to
that many in flight. Every answer's text, finish_reason and completion_tokens are kept; per level, the report counts
the answers identical A vs B and, for each that differs, the first differing character and both texts around it.
The dtype each server logged (``running on cpu, dtype ...``), both commits and the CPU's flags are recorded.
Prints one JSON object, also written to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from json_report import emit, provenance  # noqa: E402
from serve import workload_messages  # noqa: E402
from systems import System, start, stop  # noqa: E402

SAVE = "import sys; from servelm.flavors.transformers import save_model, smollm2; save_model(smollm2(), sys.argv[1])"
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
SNIPPET = 40  # characters either side of the first difference


def checkout_of(python: str) -> str:
    """The git work tree whose servelm ``python`` imports."""
    code = "import os, servelm.serving; print(os.path.dirname(os.path.dirname(servelm.serving.__file__)))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def commit_of(tree: str) -> str:
    return subprocess.run(["git", "-C", tree, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def cpu_flags() -> dict[str, bool]:
    with open("/proc/cpuinfo") as f:
        flags = next((line.partition(":")[2].split() for line in f if line.startswith("flags")), [])
    return {flag: flag in flags for flag in FLAGS}


async def answers(base: str, prompts: int, max_tokens: int, concurrency: int) -> list[dict[str, Any]]:
    """Every prompt's answer, with up to ``concurrency`` requests in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, index: int) -> dict[str, Any]:
        body = {
            "model": "tiny",
            "messages": workload_messages("real", index, "fidelity"),
            "temperature": 0.0,
            "max_tokens": max_tokens,
        }
        async with gate:
            reply = await client.post(base + "/v1/chat/completions", json=body)
        reply.raise_for_status()
        payload = reply.json()
        choice = payload["choices"][0]
        return {
            "index": index,
            "text": choice["message"]["content"] or "",
            "finish_reason": choice["finish_reason"],
            "completion_tokens": payload["usage"]["completion_tokens"],
        }

    limits = httpx.Limits(max_connections=concurrency + 1)
    async with httpx.AsyncClient(timeout=900, limits=limits) as client:
        return list(await asyncio.gather(*(one(client, i) for i in range(prompts))))


def run_side(python: str, args: argparse.Namespace, work: str, label: str) -> dict[str, Any]:
    """Save the model with this side's servelm, serve it, and collect the answers at each concurrency level."""
    model = os.path.join(work, f"smollm2-{label}")
    subprocess.run([python, "-c", SAVE, model], check=True, capture_output=True)
    argv = [python, "-m", "servelm.serving.cli", "serve", "--log-level", "info", "--workers", "1", "--engine"]
    argv += ["transformers", "-m", model, "--served-model-name", "tiny"]
    system = System(f"side-{label}", "llm", argv, "/v1/chat/completions", {}, False, {"OMP_NUM_THREADS": "1"})
    system.startup_timeout = 600
    began = time.monotonic()
    proc, base, log_path = start(system, work)
    started = time.monotonic() - began
    try:
        levels: dict[str, Any] = {}
        for level in args.concurrency:
            t0 = time.monotonic()
            levels[str(level)] = {
                "answers": asyncio.run(answers(base, args.prompts, args.max_tokens, level)),
                "seconds": round(time.monotonic() - t0, 2),
            }
    finally:
        stop(proc)
    with open(log_path, errors="replace") as f:
        log = f.read()
    dtype = re.findall(r"running on \S+, dtype (\S+)", log)
    checkout = checkout_of(python)
    return {
        "python": python,
        "checkout": checkout,
        "commit": commit_of(checkout),
        "command": argv + ["--port", "<free port>"],
        "dtype": dtype[0] if dtype else None,
        "dtype_log_lines": [line for line in log.splitlines() if "dtype" in line][:4],
        "startup_seconds": round(started, 2),
        "log": log_path,
        "levels": levels,
    }


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """How many answers are the same text (and finish reason and token count) on both sides; where one differs, the
    first differing character and both texts around it."""
    differences = []
    for x, y in zip(a, b):
        keys = ("text", "finish_reason", "completion_tokens")
        if all(x[key] == y[key] for key in keys):
            continue
        shorter = min(len(x["text"]), len(y["text"]))
        at = next((i for i, (p, q) in enumerate(zip(x["text"], y["text"])) if p != q), shorter)
        window = slice(max(0, at - SNIPPET), at + SNIPPET)
        differences.append(
            {
                "index": x["index"],
                "first_difference": at,
                "a": x["text"][window],
                "b": y["text"][window],
                "a_finish": [x["finish_reason"], x["completion_tokens"]],
                "b_finish": [y["finish_reason"], y["completion_tokens"]],
            }
        )
    return {"identical": len(a) - len(differences), "total": len(a), "differences": differences}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python-a", required=True, help="side A's interpreter (a checkout's .venv/bin/python)")
    parser.add_argument("--python-b", required=True, help="side B's interpreter")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", default="1,16", help="comma-separated: requests in flight")
    parser.add_argument("--work", default=None, help="folder for the model directories and server logs (default: new)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.concurrency = [int(level) for level in args.concurrency.split(",")]
    work = args.work or tempfile.mkdtemp(prefix="greedy-ab-")
    os.makedirs(work, exist_ok=True)
    began = time.monotonic()
    pythons = (("a", args.python_a), ("b", args.python_b))
    sides = {label: run_side(os.path.abspath(python), args, work, label) for label, python in pythons}
    levels = [str(level) for level in args.concurrency]
    report = {
        "prompts": args.prompts,
        "max_tokens": args.max_tokens,
        "commits": {label: side["commit"] for label, side in sides.items()},
        "dtypes": {label: side["dtype"] for label, side in sides.items()},
        "cpu_flags": cpu_flags(),
        "comparison": {
            level: compare(sides["a"]["levels"][level]["answers"], sides["b"]["levels"][level]["answers"])
            for level in levels
        },
        # each side against itself: its answers at each level against its answers at the first level
        "within_side": {
            label: {
                level: compare(side["levels"][levels[0]]["answers"], side["levels"][level]["answers"])["identical"]
                for level in levels[1:]
            }
            for label, side in sides.items()
        },
        "sides": sides,
        "seconds": round(time.monotonic() - began, 1),
        "provenance": {**provenance(), "command": " ".join([sys.executable, *sys.argv])},
    }
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
